"""Tiny configurations of the training tests (G's first stage is 64 px: 2 branches = 64/128)."""

from __future__ import annotations

from attngan_fast.config import config_from_dict, preset
from attngan_fast.train import gan_trainer
from attngan_fast.train.gan_trainer import GanTrainOptions


def tiny_gan_cfg(**train):
    return config_from_dict(
        {
            "TREE": {"BRANCH_NUM": 2},
            "GAN": {"GF_DIM": 2, "DF_DIM": 2, "R_NUM": 1},
            "TEXT": {"EMBEDDING_DIM": 16, "WORDS_NUM": 12},
            "TRAIN": {"BATCH_SIZE": 4, "SNAPSHOT_INTERVAL": 1, **train},
        },
        preset("birds"),
    )


def tiny_damsm_cfg():
    return config_from_dict(
        {
            "TREE": {"BRANCH_NUM": 1, "BASE_SIZE": 32},
            "TEXT": {"EMBEDDING_DIM": 16, "WORDS_NUM": 12},
            "TRAIN": {"BATCH_SIZE": 4, "MAX_EPOCH": 2, "SNAPSHOT_INTERVAL": 1},
        },
        preset("damsm_birds"),
    )


def gan_opts(out, synth_root, damsm_files, **kw) -> GanTrainOptions:
    """Options of a quiet CPU run on the tiny SynthBirds set (no samples, a record a step)."""
    base = dict(
        out_dir=out, data_dir=synth_root, text_encoder=damsm_files[0], device="cpu",
        checkpoint_every=1000, sample_every=0, log_every=1, progress=False, seed=3,
    )  # fmt: skip
    return GanTrainOptions(**{**base, **kw})


def poison_loss(monkeypatch, key: str, value: float, at_step: int | None = None) -> None:
    """Make the trainer's GAN step report ``key = value`` (at step ``at_step``, or every step)."""
    real_step = gan_trainer.gan_train_step

    def step(state, batch):
        logs = real_step(state, batch)
        if at_step is None or state.step == at_step:
            logs[key] = value
        return logs

    monkeypatch.setattr(gan_trainer, "gan_train_step", step)
