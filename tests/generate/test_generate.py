"""Generation from tiny randomly initialised checkpoints: files, unknown words, determinism."""

import json
import warnings

import numpy as np
import pytest
import torch
from fixtures.make_original_fixtures import write_original_fixtures
from fixtures.original_forward import g_net_forward, rnn_encoder_forward
from PIL import Image

from attngan_fast import cli
from attngan_fast.data.vocab import Vocabulary
from attngan_fast.eval.r_precision import pad_captions
from attngan_fast.generate import generate_from_checkpoint
from attngan_fast.models.generator import G_NET
from attngan_fast.models.text_encoder import RNN_ENCODER
from attngan_fast.runtime import generation
from attngan_fast.runtime.generation import (
    UnknownWordsWarning,
    encode_prompts,
    load_generation_models,
    run_generator,
)
from attngan_fast.runtime.run_dir import load_vocabulary, resolve_generation_files, save_vocab
from attngan_fast.viz import LABEL_HEIGHT, PADDING, to_uint8

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


def _reference_images(files, caption, n_samples, seed, legacy_mask=False):
    """What the original's code draws for ``caption`` repeated ``n_samples`` times, with the noise
    ``run_generator`` draws after ``torch.manual_seed(seed)``: z, then CA_NET's eps."""
    vocab = load_vocabulary(files["captions"])
    ids = torch.tensor([vocab.encode(caption).ids] * n_samples)
    lens = torch.full((n_samples,), ids.shape[1])
    g_state = torch.load(files["netG"], weights_only=True)
    text_state = torch.load(files["text_encoder"], weights_only=True)
    with torch.no_grad():
        words, sent = rnn_encoder_forward(text_state, ids, lens)
        torch.manual_seed(seed)
        z, eps = torch.randn(n_samples, 8), torch.randn(n_samples, 6)
        return g_net_forward(g_state, z, eps, sent, words, ids == 0, legacy_mask)


@pytest.mark.parametrize("legacy", [False, True])
def test_original_files_through_the_generate_command(tmp_path, capsys, legacy):
    """netG_epoch_600.pth, text_encoder200.pth and captions.pickle in the original's format
    (written from its module definitions): every stage's PNG is the original's forward pass.

    With --legacy-mask too: generate's batch is one caption repeated, every row has the same
    mask, so the original's misaligned rows (sample (b * N + n) mod B) read an identical mask
    and the images are the same as without it."""
    files = write_original_fixtures(tmp_path / "orig", old_style=True)
    out = tmp_path / "out"
    argv = ["generate", "--netG", str(files["netG"]), "--text-encoder", str(files["text_encoder"]),
            "--captions-pickle", str(files["captions"]), "--out", str(out), "--samples", "2",
            "--seed", "3", "--device", "cpu", CAPTION]  # fmt: skip
    argv += ["--legacy-mask"] if legacy else []
    assert cli.main(argv) == 0
    assert capsys.readouterr().out == f"8 images written under {out}\n"  # 2 x (3 stages + figure)
    images, _ = _reference_images(files, CAPTION, 2, seed=3, legacy_mask=legacy)
    folder = out / "000_this_bird_has_wings_that_are_black_and_a"
    for k in range(2):
        for s, stage in enumerate(images, 1):
            size = 64 * 2 ** (s - 1)
            png = np.asarray(Image.open(folder / f"sample{k}_stage{s}_{size}px.png"), np.int16)
            want = np.asarray(to_uint8(stage[k]), np.int16)
            assert np.abs(png - want).max() <= 1, (k, s)  # rounding at a .5 boundary at most
        assert (folder / f"sample{k}_attention.png").is_file()
    files2 = resolve_generation_files(files["netG"], text_encoder=files["text_encoder"])
    assert files2.vocab == files["captions"]  # found beside the netG file


def test_legacy_mask_reaches_the_attention_on_a_batch_of_captions(tmp_path):
    """On a batch of captions of different lengths (as eval generates), --legacy-mask changes the
    images, and each variant is the original's forward with the matching mask rule."""
    files = write_original_fixtures(tmp_path / "orig", old_style=True)
    vocab = load_vocabulary(files["captions"])
    captions = [CAPTION, "a red bird", "small white bird with black wings"]
    ids, lens = pad_captions([vocab.encode(c).ids for c in captions])  # lengths 11, 3, 5
    text_state = torch.load(files["text_encoder"], weights_only=True)
    g_state = torch.load(files["netG"], weights_only=True)
    order = torch.argsort(lens, descending=True)  # the original's RNN wants them sorted
    with torch.no_grad():
        words, sent = rnn_encoder_forward(text_state, ids[order], lens[order])
    back = torch.argsort(order)
    words, sent = words[back], sent[back]
    got = {}
    for legacy in (False, True):
        models = load_generation_models(
            files["netG"], files["text_encoder"], vocab, legacy_mask=legacy
        )
        images, attention = run_generator(models, ids, lens, seed=5)
        torch.manual_seed(5)
        z, eps = torch.randn(3, 8), torch.randn(3, 6)
        with torch.no_grad():
            want_images, want_attention = g_net_forward(
                g_state, z, eps, sent, words, ids == 0, legacy_mask=legacy
            )
        for x, y in zip(images + attention, want_images + want_attention, strict=True):
            torch.testing.assert_close(x, y, atol=1e-4, rtol=1e-4)
        got[legacy] = attention[0]
    # the fix: sample 1's padding words (3..10) get no attention; the legacy rows do give some
    assert got[False][1, 3:].abs().max() == 0 and got[True][1, 3:].abs().max() > 1e-3


def test_generate_command_takes_the_legacy_mask_of_the_run(tmp_path, monkeypatch):
    """A run trained with --legacy-mask records it in run.json; `generate --checkpoint` uses it
    (as eval and serve do), and --legacy-mask asks for it with any files."""
    run, _ = _run_dir(tmp_path)
    seen = []
    real = generation.load_generation_models

    def spy(*args, legacy_mask=False, **kwargs):
        seen.append(legacy_mask)
        return real(*args, legacy_mask=legacy_mask, **kwargs)

    monkeypatch.setattr(generation, "load_generation_models", spy)
    base = ["generate", "--checkpoint", str(run), "--device", "cpu", "--no-attention", CAPTION]
    for legacy_run, flag, want in (
        (False, [], False),
        (True, [], True),
        (False, ["--legacy-mask"], True),
    ):
        (run / "run.json").write_text(json.dumps({"legacy_mask": legacy_run}))
        assert cli.main([*base, "--out", str(tmp_path / f"out{len(seen)}"), *flag]) == 0
        assert seen[-1] is want


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
def test_generation_on_cuda_is_deterministic_and_close_to_cpu(tmp_path, monkeypatch):
    """Same seed, same CUDA images; and with the same noise (z and CA_NET's eps; the CUDA and
    CPU generators draw different numbers from one seed), CUDA computes what the CPU does."""
    from attngan_fast.runtime.generation import generate_images, sample_images

    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    run, _ = _run_dir(tmp_path)
    files = resolve_generation_files(run)
    vocab = load_vocabulary(files.vocab)
    ids = vocab.encode(CAPTION).ids
    gpu = load_generation_models(files.netG, files.text_encoder, vocab, "cuda")
    a, att_a = sample_images(gpu, ids, n_samples=3, seed=5)
    b, _ = sample_images(gpu, ids, n_samples=3, seed=5)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert [x.shape[-1] for x in a] == [64, 128, 256] and att_a[0].shape == (3, 11, 64, 64)

    cpu = load_generation_models(files.netG, files.text_encoder, vocab, "cpu")
    gen = torch.Generator().manual_seed(1)
    z, eps = torch.randn(3, 8, generator=gen), torch.randn(3, 6, generator=gen)
    captions = torch.tensor([ids] * 3)
    lens = torch.full((3,), len(ids))
    out = {}
    for name, models in (("cpu", cpu), ("cuda", gpu)):
        device = models.device
        monkeypatch.setattr(
            models.netG.ca_net, "reparametrize",
            lambda mu, logvar, d=device: mu + eps.to(d) * torch.exp(0.5 * logvar),
        )  # fmt: skip
        models.netG.eval()
        models.text_encoder.eval()
        images, att = generate_images(
            models.netG, models.text_encoder, captions.to(device), lens.to(device), z.to(device)
        )
        out[name] = [x.float().cpu() for x in images + att]
    for x, y in zip(out["cuda"], out["cpu"], strict=True):
        torch.testing.assert_close(x, y, atol=2e-4, rtol=1e-3)
