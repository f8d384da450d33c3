"""Tiny configurations of the training tests (G's first stage is 64 px: 2 branches = 64/128)."""

from __future__ import annotations

from attngan_fast.config import config_from_dict, preset


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
