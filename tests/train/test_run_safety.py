"""No run is lost or silently wrong: existing runs, non-finite weights, resume."""

from __future__ import annotations

import json
import math
import sys

import pytest
import torch
from train_helpers import gan_opts, poison_loss, tiny_damsm_cfg, tiny_gan_cfg

from attngan_fast.errors import (
    NonFiniteLossError,
    NonFiniteWeightsError,
    OutputExistsError,
    UsageError,
)
from attngan_fast.runtime import checkpoint as ckpt
from attngan_fast.train import gan_trainer
from attngan_fast.train.gan_trainer import train_gan
from attngan_fast.train.pretrain_damsm import PretrainOptions, pretrain_damsm


def _steps(metrics):
    return [json.loads(line)["step"] for line in metrics.read_text().splitlines()]


def test_existing_run_is_refused_or_overwritten(tmp_path, synth_root, damsm_files):
    files = train_gan(tiny_gan_cfg(), gan_opts(tmp_path, synth_root, damsm_files, max_steps=2))
    before = files.checkpoint.read_bytes()
    (tmp_path / "notes.txt").write_text("mine")
    (files.model_dir / "mine.pth").write_bytes(b"mine")
    (files.model_dir / "netG_epoch_7.pth").write_bytes(b"an earlier run's snapshot")
    with pytest.raises(OutputExistsError, match="--resume to continue it, --overwrite"):
        train_gan(tiny_gan_cfg(), gan_opts(tmp_path, synth_root, damsm_files, max_steps=1))
    with pytest.raises(UsageError, match="give one of them"):
        opts = gan_opts(tmp_path, synth_root, damsm_files, resume=True, overwrite=True)
        train_gan(tiny_gan_cfg(), opts)
    assert files.checkpoint.read_bytes() == before and _steps(files.metrics) == [1, 2]
    opts = gan_opts(tmp_path, synth_root, damsm_files, max_steps=1, overwrite=True)
    train_gan(tiny_gan_cfg(), opts)
    assert ckpt.load(files.checkpoint)["step"] == 1 and _steps(files.metrics) == [1]
    assert not (files.model_dir / "netG_epoch_7.pth").exists()
    assert (tmp_path / "notes.txt").is_file() and (files.model_dir / "mine.pth").is_file()


def test_existing_damsm_run_is_refused(tmp_path, synth_root, damsm_files):
    out = damsm_files[0].parent
    before = sorted(p.name for p in out.iterdir())
    with pytest.raises(OutputExistsError, match="DAMSM encoders.*--overwrite"):
        pretrain_damsm(
            tiny_damsm_cfg(),
            PretrainOptions(out_dir=out, data_dir=synth_root, image_encoder="small"),
        )
    assert sorted(p.name for p in out.iterdir()) == before


@pytest.mark.parametrize("target", ["G", "EMA"])
def test_nan_weights_with_finite_losses_are_never_saved(
    tmp_path, synth_root, damsm_files, monkeypatch, target
):
    """A NaN gradient poisons G (and its EMA) in a step whose losses are still finite; that
    step is due a checkpoint: it is refused, the one of step 2 stays the last good one."""
    real_step = gan_trainer.gan_train_step

    def step(state, batch):
        logs = real_step(state, batch)  # finite losses: the update after them was the bad one
        if state.step == 4:
            g = state.generator.ca_net.fc.weight
            with torch.no_grad():
                (state.ema.params[0] if target == "EMA" else g)[0, 0] = math.nan
        return logs

    monkeypatch.setattr(gan_trainer, "gan_train_step", step)
    opts = gan_opts(tmp_path, synth_root, damsm_files, max_steps=6, checkpoint_every=2)
    with pytest.raises(NonFiniteWeightsError, match=r"step 4: G .*NaN.*checkpoint\.pt \(step 2\)"):
        train_gan(tiny_gan_cfg(), opts)
    saved = ckpt.load(tmp_path / "checkpoint.pt")
    assert saved["step"] == 2
    for tensors in (saved["netG"], saved["netG_ema"], *saved["netsD"]):
        assert ckpt.first_non_finite(tensors) is None
    assert ckpt.first_non_finite(torch.load(tmp_path / "Model" / "netG.pth")) is None


def test_non_finite_loss_before_any_checkpoint_names_none(
    tmp_path, synth_root, damsm_files, monkeypatch
):
    poison_loss(monkeypatch, "errG_total", math.inf)
    with pytest.raises(NonFiniteLossError, match="step 1 .*no checkpoint was written") as exc:
        train_gan(tiny_gan_cfg(), gan_opts(tmp_path, synth_root, damsm_files, max_steps=6))
    assert "checkpoint.pt" not in str(exc.value)
    assert not (tmp_path / "checkpoint.pt").exists()


def test_resume_truncates_metrics_and_cleans_killed_saves(tmp_path, synth_root, damsm_files):
    files = train_gan(tiny_gan_cfg(), gan_opts(tmp_path, synth_root, damsm_files, max_steps=3))
    with files.metrics.open("a") as f:  # what a run killed after its checkpoint logged
        f.write(json.dumps({"step": 4, "epoch": 0}) + "\n" + '{"step": 5, "ep')
    stale = tmp_path / ".checkpoint.pt.x1y2z3.tmp"
    stale.write_bytes(b"half a checkpoint")
    opts = gan_opts(tmp_path, synth_root, damsm_files, max_steps=5, resume=True)
    train_gan(tiny_gan_cfg(), opts)
    assert _steps(files.metrics) == [1, 2, 3, 4, 5]
    assert not stale.exists()


def test_resume_applies_new_settings_and_refuses_another_model(
    tmp_path, synth_root, damsm_files, capsys
):
    files = train_gan(tiny_gan_cfg(), gan_opts(tmp_path, synth_root, damsm_files, max_steps=2))
    cfg = tiny_gan_cfg(GENERATOR_LR=1e-4, DISCRIMINATOR_LR=5e-5)
    opts = gan_opts(tmp_path, synth_root, damsm_files, max_steps=3, resume=True, ema_decay=0.9)
    train_gan(cfg, opts)
    out = capsys.readouterr().out
    assert "TRAIN.GENERATOR_LR (--lr): 0.0002 -> 0.0001" in out
    assert "EMA decay (--ema-decay): 0.999 -> 0.9" in out
    saved = ckpt.load(files.checkpoint)
    assert saved["step"] == 3 and saved["ema"]["decay"] == 0.9
    assert [g["lr"] for g in saved["optimizerG"]["param_groups"]] == [1e-4]
    assert {g["lr"] for o in saved["optimizersD"] for g in o["param_groups"]} == {5e-5}
    before = files.checkpoint.read_bytes()
    wider = tiny_gan_cfg()
    wider.GAN.GF_DIM = 4
    opts = gan_opts(tmp_path, synth_root, damsm_files, max_steps=5, resume=True)
    with pytest.raises(UsageError, match=r"another model \(GAN.GF_DIM \(--ngf\) 2 there, 4 now"):
        train_gan(wider, opts)
    assert files.checkpoint.read_bytes() == before


def test_nothing_to_train_is_refused(tmp_path, synth_root, damsm_files):
    with pytest.raises(UsageError, match="--batch-size 32 is larger than the 24 training images"):
        train_gan(tiny_gan_cfg(BATCH_SIZE=32), gan_opts(tmp_path, synth_root, damsm_files))
    train_gan(tiny_gan_cfg(), gan_opts(tmp_path, synth_root, damsm_files, max_steps=2))
    with pytest.raises(UsageError, match="already at step 2"):
        opts = gan_opts(tmp_path, synth_root, damsm_files, max_steps=2, resume=True)
        train_gan(tiny_gan_cfg(), opts)
    for bad in ({"log_every": 0}, {"checkpoint_every": 0}, {"ema_decay": 1.0}, {"augment": "flip"}):
        with pytest.raises(UsageError, match="must be"):
            train_gan(tiny_gan_cfg(), gan_opts(tmp_path / "new", synth_root, damsm_files, **bad))


def test_damsm_non_finite_loss_names_only_files_that_exist(tmp_path, synth_root, monkeypatch):
    module = sys.modules["attngan_fast.train.pretrain_damsm"]
    real_loss = module.damsm_total_loss

    def loss(*args):
        total, terms = real_loss(*args)
        return total * math.nan, terms

    monkeypatch.setattr(module, "damsm_total_loss", loss)
    opts = PretrainOptions(out_dir=tmp_path, data_dir=synth_root, image_encoder="small",
                           small_ndf=4, small_size=32, max_steps=2, progress=False)  # fmt: skip
    with pytest.raises(NonFiniteLossError, match=r"step 1 .*no encoder file was written") as exc:
        pretrain_damsm(tiny_damsm_cfg(), opts)
    assert ".pth" not in str(exc.value) and not list(tmp_path.glob("*.pth"))
