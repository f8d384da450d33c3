"""Fixtures of the DrawingBot tests."""

import pytest
from serve_fakes import make_tiny_run


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """A tiny untrained 3-stage model laid out as a training run (see ``serve_fakes``)."""
    return make_tiny_run(tmp_path_factory.mktemp("serve") / "tiny")
