"""Shared fixtures of the data tests: a small SynthBirds tree and a tiny fake CUB tree."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from data_fakes import make_cub_tree

from attngan_fast.data.synth_birds import make_synth_birds


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory) -> Path:
    """24 train + 8 test SynthBirds at 128 px (the CUB loader caches captions.pickle in it)."""
    root = tmp_path_factory.mktemp("synth") / "birds"
    return make_synth_birds(root, 24, 8, seed=3, image_size=128, n_species=8)


@pytest.fixture
def synth_copy(synth_root, tmp_path) -> Path:
    """A private copy of the SynthBirds tree without captions.pickle, free to modify."""
    root = tmp_path / "birds"
    shutil.copytree(synth_root, root, ignore=shutil.ignore_patterns("captions.pickle"))
    return root


@pytest.fixture
def cub_tree(tmp_path) -> Path:
    return make_cub_tree(
        tmp_path / "birds",
        ["001.Red_Bird/Red_Bird_0001", "001.Red_Bird/Red_Bird_0002", "002.Blue_Bird/Blue_0003"],
        ["003.Green_Bird/Green_0004"],
    )
