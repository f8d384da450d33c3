"""Fixtures of the op tests: the backend a parametrised test runs (the emulated cuda kernels
registered for it), spies that prove a Triton kernel really ran (no silent fallback), and, with
``ATTNGAN_FAST_GPU_NUMERICS=1`` under the interpreter, the GPU's fp32 numerics
(``gpu_numerics.py``: TF32 / 3xTF32 ``tl.dot``, approximate sqrt, division and exp) for the whole
session."""

from __future__ import annotations

import cuda_emulation
import gpu_numerics
import pytest

from attngan_fast.ops.triton._common import triton_interpret


@pytest.fixture(scope="session")
def emulation_library(tmp_path_factory):
    """The csrc kernels built for the host emulation (once a session), or a skip saying why."""
    try:
        return cuda_emulation.build(tmp_path_factory.mktemp("cuda_emulation"))
    except cuda_emulation.Unavailable as exc:
        pytest.skip(str(exc))


@pytest.fixture
def backend(request):
    """The backend name of a test parametrised with ``indirect=["backend"]``; the emulated cuda
    kernels are registered for the test when it is theirs."""
    name = request.param
    if name != cuda_emulation.NAME:
        yield name
        return
    with cuda_emulation.registered(request.getfixturevalue("emulation_library")):
        yield name


class KernelSpy:
    """Stands in for a Triton kernel (``kernel[grid](...)``) and counts its launches."""

    def __init__(self, kernel):
        self.kernel, self.launches = kernel, 0

    def __getitem__(self, grid):
        self.launches += 1
        return self.kernel[grid]

    def __getattr__(self, name):  # configs, best_config, ... of an autotuned kernel
        return getattr(self.kernel, name)


@pytest.fixture
def spy_kernels(monkeypatch):
    """``spy_kernels(module, "name", ...)`` replaces those kernels of ``module`` with spies."""

    def install(module, *names: str) -> tuple[KernelSpy, ...]:
        spies = tuple(KernelSpy(getattr(module, name)) for name in names)
        for name, spy in zip(names, spies):
            monkeypatch.setattr(module, name, spy)
        return spies

    return install


@pytest.fixture(autouse=True, scope="session")
def _gpu_numerics():
    """The interpreter computes as an sm_80+ GPU would when ATTNGAN_FAST_GPU_NUMERICS=1."""
    if not (gpu_numerics.requested() and triton_interpret()):
        yield
        return
    with gpu_numerics.emulate():
        yield
