"""``attngan-fast train`` paths a user takes, end to end on the tiny SynthBirds set: an
original-format ``--cfg`` yml, ``--precision bf16``, ``--legacy-mask``."""

from __future__ import annotations

import json

import pytest
import torch
from fixtures.original_forward import global_attention

from attngan_fast import cli, ops
from attngan_fast.config import load_config
from attngan_fast.runtime import checkpoint as ckpt

TINY = [
    "--set", "TREE.BRANCH_NUM=2", "--set", "GAN.GF_DIM=2", "--set", "GAN.DF_DIM=2",
    "--set", "GAN.R_NUM=1", "--set", "TEXT.EMBEDDING_DIM=16", "--set", "TEXT.WORDS_NUM=12",
    "--batch-size", "4", "--no-progress", "--device", "cpu", "--sample-every", "0",
    "--log-every", "1", "--seed", "5",
]  # fmt: skip


def _train(out, synth_root, damsm_files, *extra):
    argv = ["train", *TINY, "--data", str(synth_root), "--text-encoder", str(damsm_files[0])]
    assert cli.main([*argv, "--out", str(out), *extra]) == 0
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


LOSSES = ("errD0", "errD1", "g_loss0", "g_loss1", "w_loss", "s_loss", "kl_loss", "errG_total")

ORIGINAL_YML = """\
CONFIG_NAME: 'attn2'

DATASET_NAME: 'birds'
DATA_DIR: '{data}'
GPU_ID: 0
WORKERS: 0


TREE:
    BRANCH_NUM: 2


TRAIN:
    FLAG: True
    NET_G: ''  # '../models/bird_AttnGAN2.pth'
    B_NET_D: True
    BATCH_SIZE: 4  # 22
    MAX_EPOCH: 1
    SNAPSHOT_INTERVAL: 1
    DISCRIMINATOR_LR: 0.0003
    GENERATOR_LR: 0.0001
    #
    NET_E: '{text_encoder}'
    SMOOTH:
        GAMMA1: 4.0  # 1,2,5 good 4 best  10&100bad
        GAMMA2: 5.0
        GAMMA3: 10.0  # 10good 1&100bad
        LAMBDA: 2.5


GAN:
    DF_DIM: 2
    GF_DIM: 2
    Z_DIM: 10
    R_NUM: 1

TEXT:
    EMBEDDING_DIM: 16
    CAPTIONS_PER_IMAGE: 10
    WORDS_NUM: 12
"""


def test_original_format_yml(tmp_path, synth_root, damsm_files):
    """A yml in the original's layout (its cfg/bird_attn2.yml with tiny sizes, comments and the
    keys this package has no use for, GPU_ID, WORKERS, NET_G ...) is the whole configuration:
    the dataset and the text encoder come from DATA_DIR and TRAIN.NET_E."""
    yml = tmp_path / "bird_tiny.yml"
    yml.write_text(ORIGINAL_YML.format(data=synth_root, text_encoder=damsm_files[0]))
    out = tmp_path / "run"
    argv = ["train", "--cfg", str(yml), "--out", str(out), "--steps", "2", "--device", "cpu"]
    assert cli.main([*argv, "--no-progress", "--sample-every", "0", "--log-every", "1"]) == 0
    cfg = load_config(out / "config.yml")
    assert (cfg.TREE.BRANCH_NUM, cfg.GAN.GF_DIM, cfg.GAN.DF_DIM, cfg.GAN.Z_DIM) == (2, 2, 2, 10)
    assert (cfg.TRAIN.GENERATOR_LR, cfg.TRAIN.DISCRIMINATOR_LR) == (1e-4, 3e-4)
    assert (cfg.TRAIN.SMOOTH.LAMBDA, cfg.TEXT.WORDS_NUM, cfg.TRAIN.BATCH_SIZE) == (2.5, 12, 4)
    info = json.loads((out / "run.json").read_text())
    assert info["data_dir"] == str(synth_root) and info["text_encoder"] == str(damsm_files[0])
    saved = ckpt.load(out / "checkpoint.pt")
    assert saved["step"] == 2 and saved["netG"]["h_net1.fc.0.weight"].shape == (
        2 * 16 * 32,
        100 + 10,
    )
    opt = saved["optimizersD"][0]["param_groups"][0]
    assert (saved["optimizerG"]["param_groups"][0]["lr"], opt["lr"]) == (1e-4, 3e-4)


def test_bf16_through_the_command(tmp_path, synth_root, damsm_files):
    """--precision bf16: the same first step as fp32 (same seed, same weights before it) within
    bf16's rounding, yet not equal (autocast ran); the weights stay float32."""
    fp32 = _train(tmp_path / "fp32", synth_root, damsm_files, "--steps", "2")
    bf16 = _train(tmp_path / "bf16", synth_root, damsm_files, "--steps", "2", "--precision", "bf16")
    for key in LOSSES:
        # step 1 starts from the same weights: bf16 rounds inputs and products to 8 bits of
        # mantissa (relative 2^-8 = 0.4 %) over a few layers: agree within 10 %, never equal
        assert bf16[0][key] == pytest.approx(fp32[0][key], rel=0.1, abs=0.02), key
    assert any(bf16[0][key] != fp32[0][key] for key in LOSSES)
    saved = ckpt.load(tmp_path / "bf16" / "checkpoint.pt")
    assert saved["precision"] == "bf16"
    tensors = [*saved["netG"].values(), *saved["netG_ema"].values()]
    assert all(t.dtype == torch.float32 for t in tensors if t.is_floating_point())


def test_legacy_mask_through_training(tmp_path, synth_root, damsm_files, monkeypatch):
    """train --legacy-mask: G's attention gets the original's misaligned mask (each call equals
    the original's attention with mask.repeat, and not the fixed one, on batches of captions of
    different lengths), the run differs from the fixed one, and run.json records it."""
    calls = []
    real = ops.word_attention

    def spy(query, source, mask, *, need_attn=True, legacy_mask=False, backend=None):
        out = real(
            query, source, mask, need_attn=need_attn, legacy_mask=legacy_mask, backend=backend
        )
        calls.append((query.detach(), source.detach(), mask, legacy_mask, out[0].detach()))
        return out

    monkeypatch.setattr(ops, "word_attention", spy)
    # TEXT.WORDS_NUM 30: no caption is cut to a common length, so batches mix lengths
    run = ["--steps", "2", "--set", "TEXT.WORDS_NUM=30"]
    legacy = _train(tmp_path / "legacy", synth_root, damsm_files, *run, "--legacy-mask")
    assert calls and all(c[3] for c in calls)
    mixed = [c for c in calls if len({tuple(row.tolist()) for row in c[2]}) > 1]
    assert mixed  # some batch holds captions of different lengths
    query, source, mask, _, context = mixed[0]
    b, c, n = query.shape
    identity = torch.eye(c)[:, :, None, None]  # source is already projected by conv_context
    side = int(n**0.5)
    want = {
        rule: global_attention(identity, query.view(b, c, side, side), source, mask, rule)[0]
        for rule in (True, False)
    }
    torch.testing.assert_close(context.view(b, c, side, side), want[True], atol=1e-5, rtol=1e-4)
    assert not torch.allclose(want[True], want[False], atol=1e-3)
    calls.clear()
    fixed = _train(tmp_path / "fixed", synth_root, damsm_files, *run)
    assert calls and not any(c[3] for c in calls)
    assert legacy[0]["g_loss1"] != fixed[0]["g_loss1"]
    assert json.loads((tmp_path / "legacy" / "run.json").read_text())["legacy_mask"] is True
