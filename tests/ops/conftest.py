"""Fixtures of the op tests: spies that prove a Triton kernel really ran (no silent fallback),
and, with ``ATTNGAN_FAST_GPU_NUMERICS=1`` under the interpreter, the GPU's fp32 numerics
(``gpu_numerics.py``: TF32 / 3xTF32 ``tl.dot``, approximate sqrt, division and exp) for the whole
session."""

from __future__ import annotations

import gpu_numerics
import pytest

from attngan_fast.ops._backend import triton_interpret


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
