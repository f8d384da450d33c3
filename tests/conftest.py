"""Test configuration: Triton runs through its interpreter on machines without a CUDA GPU.

``TRITON_INTERPRET`` must be set before triton is first imported, so it is set here, before any
test module imports the package. Tests marked ``gpu`` are skipped without a CUDA device.
"""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

# Under pytest-xdist (``-n``) the workers share the cores: one torch thread each, or 2 workers on
# 2 cores run 4 threads and the OpenMP barriers spin against each other.
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    workers = int(os.environ["PYTEST_XDIST_WORKER_COUNT"])
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
