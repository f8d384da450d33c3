"""Generation from tiny randomly initialised checkpoints: files, unknown words, determinism."""

import json
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from attngan_fast.data.captions import CaptionSets, save_captions_pickle
from attngan_fast.data.vocab import Vocabulary
from attngan_fast.generate import generate_from_checkpoint
from attngan_fast.models.generator import G_NET
from attngan_fast.models.text_encoder import RNN_ENCODER
from attngan_fast.runtime.generation import UnknownWordsWarning, encode_prompts
from attngan_fast.runtime.run_dir import resolve_generation_files, save_vocab
from attngan_fast.viz import LABEL_HEIGHT, PADDING

WORDS = "this bird has wings that are black and a white belly red small".split()
CAPTION = "this bird has wings that are black and a white belly"


def _tiny_models(branch_num=3):
    vocab = Vocabulary.build([WORDS])
    netG = G_NET(ngf=2, nef=16, ncf=6, z_dim=8, r_num=1, branch_num=branch_num)
    with torch.no_grad():  # a fresh G's images are almost flat grey: give them some contrast
        for i in range(1, branch_num + 1):
            getattr(netG, f"img_net{i}").img[0].weight.mul_(30)
    text = RNN_ENCODER(len(vocab), ninput=10, nhidden=16)
    return vocab, netG, text


def _run_dir(tmp_path, branch_num=3):
    """A folder laid out as the trainer writes it (Model/netG.pth, Model/text_encoder.pth,
    vocab.json, run.json)."""
    vocab, netG, text = _tiny_models(branch_num)
    run = tmp_path / "run"
    (run / "Model").mkdir(parents=True)
    torch.save(netG.state_dict(), run / "Model" / "netG_epoch_3.pth")
    torch.save(netG.state_dict(), run / "Model" / "netG.pth")
    torch.save(text.state_dict(), run / "Model" / "text_encoder.pth")
    save_vocab(vocab, run / "vocab.json")
    (run / "run.json").write_text(json.dumps({"legacy_mask": False}))
    return run, netG


def test_unknown_words_are_reported_and_captions_without_known_words_rejected():
    vocab = Vocabulary.build([WORDS])
    with pytest.warns(UnknownWordsWarning, match="with, purple, beak"):
        (prompt,) = encode_prompts(vocab, ["a red bird with a purple beak"])
    assert prompt.words == ["a", "red", "bird", "a"]
    assert prompt.unknown == ["with", "purple", "beak"]
    with pytest.raises(ValueError, match="no word the model knows.*zebra, crossing"):
        encode_prompts(vocab, ["zebra crossing"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        encode_prompts(vocab, [CAPTION])  # all known: no warning


def test_generate_from_a_run_folder_writes_stages_and_attention_figure(tmp_path):
    run, _ = _run_dir(tmp_path)
    out = tmp_path / "out"
    with pytest.warns(UnknownWordsWarning, match="purple"):
        paths = generate_from_checkpoint(
            run, [CAPTION, "a small purple bird"], out, n_samples=2, seed=3
        )
    names = sorted(p.relative_to(out).as_posix() for p in paths)
    assert len(names) == 2 * 2 * 4  # 2 captions x 2 samples x (3 stages + attention figure)
    first = out / "000_this_bird_has_wings_that_are_black_and_a"
    for k in range(2):
        sizes = [Image.open(first / f"sample{k}_stage{s}_{64 * 2 ** (s - 1)}px.png").size
                 for s in (1, 2, 3)]  # fmt: skip
        assert sizes == [(64, 64), (128, 128), (256, 256)]
    fig = Image.open(first / "sample0_attention.png")
    n_words, panel = len(CAPTION.split()), 256  # two rows (128 and 256 px stages)
    assert fig.size == (
        PADDING + (1 + n_words) * (panel + PADDING),
        PADDING + 2 * (LABEL_HEIGHT + panel + PADDING),
    )
    second = out / "001_a_small_purple_bird"
    assert Image.open(second / "sample1_attention.png").size[0] == PADDING + 4 * (panel + PADDING)
    assert "unknown: purple" in (second / "caption.txt").read_text()


def test_generation_is_deterministic_with_a_seed(tmp_path):
    run, _ = _run_dir(tmp_path, branch_num=2)

    def pixels(out, seed):
        generate_from_checkpoint(run, [CAPTION], out, n_samples=2, seed=seed, attention=False)
        folder = out / "000_this_bird_has_wings_that_are_black_and_a"
        return [np.asarray(Image.open(folder / f"sample{k}_stage2_128px.png")) for k in (0, 1)]

    a, b, c = pixels(tmp_path / "a", 7), pixels(tmp_path / "b", 7), pixels(tmp_path / "c", 8)
    assert all((x == y).all() for x, y in zip(a, b))
    assert not (a[0] == c[0]).all()
    assert not (a[0] == a[1]).all()  # two samples, two noises


def test_original_checkpoint_files_with_a_captions_pickle(tmp_path):
    vocab, netG, text = _tiny_models()
    torch.save(netG.state_dict(), tmp_path / "netG_epoch_600.pth")
    encoders = tmp_path / "DAMSMencoders"
    encoders.mkdir()
    torch.save(text.state_dict(), encoders / "text_encoder200.pth")
    save_captions_pickle(tmp_path / "captions.pickle", CaptionSets([[1, 2]], [[3]], vocab))
    files = resolve_generation_files(
        tmp_path / "netG_epoch_600.pth", text_encoder=encoders / "text_encoder200.pth"
    )
    assert files.vocab == tmp_path / "captions.pickle"
    paths = generate_from_checkpoint(
        tmp_path / "netG_epoch_600.pth", [CAPTION], tmp_path / "out",
        text_encoder=encoders / "text_encoder200.pth",
    )  # fmt: skip
    assert len(paths) == 4


def test_missing_parts_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        resolve_generation_files(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="netG.pth"):
        resolve_generation_files(tmp_path / "empty")
    run, _ = _run_dir(tmp_path)
    assert resolve_generation_files(run / "Model").netG == run / "Model" / "netG.pth"
    (run / "Model" / "netG.pth").unlink()
    assert resolve_generation_files(run).netG == run / "Model" / "netG_epoch_3.pth"
    (run / "vocab.json").unlink()
    with pytest.raises(FileNotFoundError, match="--vocab"):
        resolve_generation_files(run)


@pytest.mark.gpu
def test_generation_on_cuda_is_deterministic_and_close_to_cpu(tmp_path):
    from attngan_fast.runtime.generation import load_generation_models, sample_images
    from attngan_fast.runtime.run_dir import load_vocabulary

    run, _ = _run_dir(tmp_path)
    files = resolve_generation_files(run)
    vocab = load_vocabulary(files.vocab)
    ids = vocab.encode(CAPTION).ids
    gpu = load_generation_models(files.netG, files.text_encoder, vocab, "cuda")
    a, att_a = sample_images(gpu, ids, n_samples=3, seed=5)
    b, _ = sample_images(gpu, ids, n_samples=3, seed=5)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert [x.shape[-1] for x in a] == [64, 128, 256] and att_a[0].shape == (3, 11, 64, 64)
