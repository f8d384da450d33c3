"""The CUDA sources compile without a GPU: tools/check_cuda_kernels.sh compiles every csrc/*.cu
with nvcc for sm_80 and sm_90 and syntax-checks csrc/bindings.cpp against torch's headers.
Skipped where nvcc is missing.

What the kernels compute is checked without a GPU too: the op suites (tests/ops/test_<op>.py) run
them through the host emulation (tests/ops/cuda_emulation.py) as backend ``cuda_emulated``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CSRC = ROOT / "csrc"
SCRIPT = ROOT / "tools" / "check_cuda_kernels.sh"


def _nvcc() -> str | None:
    cuda_home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    found = shutil.which("nvcc")
    if found is None and cuda_home:
        found = shutil.which("nvcc", path=str(Path(cuda_home) / "bin"))
    return found


needs_nvcc = pytest.mark.skipif(_nvcc() is None, reason="nvcc is not on PATH (nor in CUDA_HOME)")


@needs_nvcc
def test_cuda_sources_compile():
    env = dict(os.environ, NVCC=_nvcc())
    result = subprocess.run(
        ["bash", str(SCRIPT)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900
    )
    report = result.stdout + result.stderr
    assert result.returncode == 0, report
    for source in sorted(CSRC.glob("*.cu")):
        assert f"ok    csrc/{source.name}" in report, report
