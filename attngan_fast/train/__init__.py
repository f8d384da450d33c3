"""Training: DAMSM pretraining, the AttnGAN GAN step and loop, resume, multi-GPU.

    from attngan_fast.train import build_gan_state, gan_train_step, synthetic_batch
    state = build_gan_state(cfg, vocab_size, "cuda", "bf16")      # models, optimisers, EMA
    logs = gan_train_step(state, synthetic_batch(cfg, vocab_size, 20, "cuda"))

``train_gan`` / ``pretrain_damsm`` are the full loops (``attngan-fast train`` /
``attngan-fast pretrain-damsm``).
"""

from attngan_fast.train.gan_step import (
    GanState,
    build_gan_state,
    gan_train_step,
    synthetic_batch,
)
from attngan_fast.train.gan_trainer import GanTrainOptions, train_gan
from attngan_fast.train.pretrain_damsm import PretrainOptions, pretrain_damsm

__all__ = [
    "GanState",
    "GanTrainOptions",
    "PretrainOptions",
    "build_gan_state",
    "gan_train_step",
    "pretrain_damsm",
    "synthetic_batch",
    "train_gan",
]
