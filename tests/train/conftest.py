"""Shared tiny fixtures of the training tests: a SynthBirds set, DAMSM encoders, configs.

Sizes are the smallest the models accept (G's first stage is 64 px, so 2 branches = 64/128 px,
ngf 2-4, batch 4). Tests run single-threaded: on a shared 2-core machine that is faster.
"""

from __future__ import annotations

import pytest
import torch
from train_helpers import tiny_damsm_cfg

from attngan_fast.data.synth_birds import make_synth_birds


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory):
    """A SynthBirds set of 24 train / 8 test images of 64 px."""
    return make_synth_birds(tmp_path_factory.mktemp("synth") / "birds", 24, 8, image_size=64)


@pytest.fixture(scope="session")
def damsm_files(synth_root, tmp_path_factory):
    """(text_encoder, image_encoder) files from a few DAMSM pretraining steps (small encoder)."""
    from attngan_fast.train.pretrain_damsm import PretrainOptions, pretrain_damsm

    out = tmp_path_factory.mktemp("damsm")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return pretrain_damsm(
            tiny_damsm_cfg(),
            PretrainOptions(
                out_dir=out, data_dir=synth_root, image_encoder="small", small_ndf=4,
                small_size=32, max_steps=4, progress=False, log_every=1,
            ),
        )  # fmt: skip
    finally:
        torch.set_num_threads(threads)
