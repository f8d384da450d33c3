"""The training loops on a tiny SynthBirds set: files, bit-for-bit resume, non-finite stop."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
import torch
from train_helpers import gan_opts, poison_loss, tiny_gan_cfg

from attngan_fast.errors import NonFiniteLossError
from attngan_fast.models import RNN_ENCODER, SmallImageEncoder
from attngan_fast.runtime import checkpoint as ckpt
from attngan_fast.runtime.networks import load_encoders
from attngan_fast.train.gan_trainer import train_gan


def test_pretrain_writes_original_format(damsm_files):
    text_path, image_path = damsm_files
    assert text_path.name == "text_encoder0.pth" and image_path.name == "image_encoder0.pth"
    text_state = torch.load(text_path, weights_only=True)
    image_state = torch.load(image_path, weights_only=True)
    assert {"encoder.weight", "rnn.weight_ih_l0", "rnn.weight_ih_l0_reverse"} <= set(text_state)
    assert {"emb_features.weight", "emb_cnn_code.weight"} <= set(image_state)
    n_words = text_state["encoder.weight"].shape[0]
    RNN_ENCODER(n_words, nhidden=16).load_state_dict(text_state)  # plain state dicts
    SmallImageEncoder(16, ndf=4, image_size=32).load_state_dict(image_state)
    text, image, spec = load_encoders(text_path)
    assert spec.image_encoder == "small" and spec.small_size == 32 and spec.n_words == n_words
    metrics = (text_path.parent / "metrics.jsonl").read_text().splitlines()
    assert len([m for m in metrics if '"loss"' in m]) == 4 and '"loss"' in metrics[0]
    assert '"test_r1_text_to_image"' in metrics[-1]  # the test split scored after the epoch


def _all_state(path):
    saved = ckpt.load(path)
    tensors = dict(saved["netG"])
    tensors.update({f"ema.{k}": v for k, v in saved["netG_ema"].items()})
    for i, d in enumerate(saved["netsD"]):
        tensors.update({f"D{i}.{k}": v for k, v in d.items()})
    for i, opt in enumerate([saved["optimizerG"], *saved["optimizersD"]]):
        for pid, st in opt["state"].items():
            tensors.update({f"opt{i}.{pid}.{k}": v for k, v in st.items() if torch.is_tensor(v)})
    return saved, tensors


def test_resume_is_bit_for_bit(tmp_path, synth_root, damsm_files):
    """7 steps straight == 3 steps, save, then a fresh process (`attngan-fast train --resume`)
    continues for 4 more, crossing an epoch boundary: every tensor of the state is identical."""
    cfg = tiny_gan_cfg()  # 24 images / batch 4 = 6 steps per epoch
    straight = train_gan(cfg, gan_opts(tmp_path / "a", synth_root, damsm_files, max_steps=7))
    first = train_gan(cfg, gan_opts(tmp_path / "b", synth_root, damsm_files, max_steps=3))
    assert ckpt.load(first.checkpoint)["step"] == 3
    sets = [
        "TREE.BRANCH_NUM=2", "GAN.GF_DIM=2", "GAN.DF_DIM=2", "GAN.R_NUM=1",
        "TEXT.EMBEDDING_DIM=16", "TEXT.WORDS_NUM=12", "TRAIN.BATCH_SIZE=4",
        "TRAIN.SNAPSHOT_INTERVAL=1",
    ]  # fmt: skip
    command = [
        sys.executable, "-m", "attngan_fast.cli", "train", "--preset", "birds",
        *[a for s in sets for a in ("--set", s)],
        "--data", str(synth_root), "--text-encoder", str(damsm_files[0]),
        "--out", str(tmp_path / "b"), "--steps", "7", "--resume", "--seed", "99",
        "--checkpoint-every", "1000", "--sample-every", "0", "--log-every", "1",
        "--no-progress", "--device", "cpu", "--workers", "0",
    ]  # fmt: skip
    # --seed 99: a resumed run takes its random streams from the checkpoint, a fresh one would not
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # same thread count as this process
    subprocess.run(command, check=True, env=env, timeout=600)
    a, ta = _all_state(straight.checkpoint)
    b, tb = _all_state(first.checkpoint)
    assert a["step"] == b["step"] == 7 and a["epoch"] == b["epoch"] == 1
    assert a["sampler"] == b["sampler"]
    assert set(ta) == set(tb)
    for key in ta:
        assert torch.equal(ta[key], tb[key]), key
    assert [r["step"] for r in _losses(first.metrics)] == list(range(1, 8))
    assert _losses(straight.metrics) == _losses(first.metrics)


def _losses(path):
    records = [json.loads(line) for line in path.read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in ("time", "images_per_s")} for r in records]


def test_run_files(tmp_path, synth_root, damsm_files):
    files = train_gan(
        tiny_gan_cfg(),
        gan_opts(tmp_path, synth_root, damsm_files, max_steps=2, sample_every=2,
              sample_captions=["a bird with a red crown", "a blue bird"]),
    )  # fmt: skip
    for path in (files.checkpoint, files.netG, files.text_encoder, files.vocab, files.config):
        assert path.is_file(), path
    assert (files.samples / "step_0000002.png").is_file()
    assert (files.samples / "step_0000002_attention.png").is_file()
    netG = torch.load(files.netG, weights_only=True)
    assert "h_net2.att.conv_context.weight" in netG  # original key names, EMA weights
    saved = ckpt.load(files.checkpoint)
    for k, v in saved["netG_ema"].items():
        assert torch.equal(netG[k], v)


def test_non_finite_loss_stops_and_keeps_checkpoint(tmp_path, synth_root, damsm_files, monkeypatch):
    poison_loss(monkeypatch, "errD1", math.nan, at_step=3)
    opts = gan_opts(tmp_path, synth_root, damsm_files, max_steps=6, checkpoint_every=2)
    with pytest.raises(NonFiniteLossError, match=r"step 3 .*errD1 = nan"):
        train_gan(tiny_gan_cfg(), opts)
    saved = ckpt.load(tmp_path / "checkpoint.pt")
    assert saved["step"] == 2
    assert all(torch.isfinite(v).all() for v in saved["netG"].values() if v.is_floating_point())


def test_vocabulary_mismatch_is_explained(tmp_path, synth_root, damsm_files):
    text = torch.load(damsm_files[0], weights_only=True)
    text["encoder.weight"] = text["encoder.weight"][:-1]
    bad = tmp_path / "enc" / "text_encoder0.pth"
    bad.parent.mkdir()
    torch.save(text, bad)
    (bad.parent / "image_encoder0.pth").write_bytes(damsm_files[1].read_bytes())
    with pytest.raises(ValueError, match="different datasets"):
        train_gan(tiny_gan_cfg(), gan_opts(tmp_path, synth_root, (bad, None), max_steps=1))


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_gpu_run_and_resume(tmp_path, synth_root, damsm_files, precision):
    opts = gan_opts(tmp_path, synth_root, damsm_files, device="cuda", precision=precision)
    opts.channels_last = True
    opts.max_steps = 3
    train_gan(tiny_gan_cfg(), opts)
    opts.max_steps, opts.resume = 5, True
    files = train_gan(tiny_gan_cfg(), opts)
    saved = ckpt.load(files.checkpoint)
    assert saved["step"] == 5
    assert (saved["scaler"] is not None) == (precision == "fp16")


@pytest.mark.parametrize(
    "precision, flag, want", [("bf16", None, True), ("fp32", None, False), ("bf16", False, False)]
)
def test_cpu_memory_format_follows_the_precision(
    tmp_path, synth_root, damsm_files, monkeypatch, capsys, precision, flag, want
):
    """Without --channels-last / --no-channels-last, bf16 on a CPU trains channels-last (and says
    so), fp32 in NCHW; an explicit flag wins."""
    from attngan_fast.train import gan_trainer

    seen = []
    real = gan_trainer.build_gan_state
    monkeypatch.setattr(
        gan_trainer,
        "build_gan_state",
        lambda *a, **k: seen.append(k["channels_last"]) or real(*a, **k),
    )
    opts = gan_opts(
        tmp_path, synth_root, damsm_files, precision=precision, channels_last=flag, max_steps=1
    )
    train_gan(tiny_gan_cfg(), opts)
    assert seen == [want]
    said = (
        "channels-last: on (bf16 on a CPU; --no-channels-last for NCHW)" in capsys.readouterr().out
    )
    assert said == (want and flag is None)
