"""``generate --same-noise``: every caption gets the same z (and CA_NET noise), so two captions
that differ in one word differ only by what that word does."""

import numpy as np
from PIL import Image
from test_generate import _run_dir

from attngan_fast import cli
from attngan_fast.generate import generate_from_checkpoint

SAME = "this bird has wings that are black and a white belly"


def _images(written, stage=3):
    return [np.asarray(Image.open(p)) for p in written if f"_stage{stage}_" in p.name]


def test_same_noise_gives_one_caption_the_same_image_at_every_position(tmp_path):
    run, _ = _run_dir(tmp_path)
    same = _images(generate_from_checkpoint(run, [SAME, SAME], tmp_path / "a", same_noise=True))
    assert np.array_equal(same[0], same[1])
    apart = _images(generate_from_checkpoint(run, [SAME, SAME], tmp_path / "b"))
    assert not np.array_equal(apart[0], apart[1])  # seed + i: another z for the second
    assert np.array_equal(same[0], apart[0])  # the first caption keeps seed --seed


def test_same_noise_from_the_command_line(tmp_path, monkeypatch):
    run, _ = _run_dir(tmp_path)
    seen = []
    from attngan_fast import generate

    real = generate.sample_images

    def spy(models, ids, n_samples, seed):
        seen.append(seed)
        return real(models, ids, n_samples, seed)

    monkeypatch.setattr(generate, "sample_images", spy)
    captions = [SAME, "this bird has wings that are red and a white belly"]
    args = ["generate", *captions, "--checkpoint", str(run), "--device", "cpu", "--seed", "7"]
    assert cli.main([*args, "--out", str(tmp_path / "o1"), "--same-noise"]) == 0
    assert cli.main([*args, "--out", str(tmp_path / "o2")]) == 0
    assert seen == [7, 7, 7, 8]
