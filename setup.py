"""Build script: pure Python + Triton always; the CUDA extension ``attngan_fast._C`` when possible.

The compiled extension is built from ``csrc/`` when

* ``ATTNGAN_FAST_FORCE_CUDA=1``, or
* torch was built with CUDA and ``nvcc`` is found (``CUDA_HOME`` or ``PATH``),

and skipped (the package still installs and runs on the Triton and PyTorch backends) when
``ATTNGAN_FAST_SKIP_CUDA=1`` or neither condition holds. Target architectures come from
``TORCH_CUDA_ARCH_LIST`` (default ``8.0;8.6;8.9;9.0``).
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from setuptools import setup

ROOT = Path(__file__).parent
CSRC = ROOT / "csrc"
DEFAULT_ARCHS = "8.0;8.6;8.9;9.0"


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def _want_cuda_extension() -> tuple[bool, str]:
    if _flag("ATTNGAN_FAST_SKIP_CUDA"):
        return False, "ATTNGAN_FAST_SKIP_CUDA is set"
    if _flag("ATTNGAN_FAST_FORCE_CUDA"):
        return True, "ATTNGAN_FAST_FORCE_CUDA is set"
    try:
        import torch
    except ImportError:
        return False, "torch is not importable in the build environment"
    if torch.version.cuda is None:
        return False, f"torch {torch.__version__} was built without CUDA"
    cuda_home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    nvcc = shutil.which("nvcc") or (cuda_home and shutil.which("nvcc", path=f"{cuda_home}/bin"))
    if not nvcc:
        return False, "nvcc was not found (set CUDA_HOME or put nvcc on PATH)"
    return True, f"torch {torch.__version__} has CUDA {torch.version.cuda} and nvcc is at {nvcc}"


def _extension_kwargs() -> dict:
    build, why = _want_cuda_extension()
    sources = sorted(str(p.relative_to(ROOT)) for p in CSRC.glob("*.cu")) + sorted(
        str(p.relative_to(ROOT)) for p in CSRC.glob("*.cpp")
    )
    if not build or not sources:
        reason = why if not build else "csrc/ holds no sources yet"
        print(f"attngan-fast: skipping the CUDA extension ({reason})", file=sys.stderr)
        return {}
    print(f"attngan-fast: building the CUDA extension ({why})", file=sys.stderr)
    from torch.utils.cpp_extension import BuildExtension, CUDAExtension

    os.environ.setdefault("TORCH_CUDA_ARCH_LIST", DEFAULT_ARCHS)
    ext = CUDAExtension(
        name="attngan_fast._C",
        sources=sources,
        include_dirs=[str(CSRC)],
        extra_compile_args={
            "cxx": ["-O3", "-std=c++17"],
            "nvcc": ["-O3", "-std=c++17", "-lineinfo"],
        },
    )
    build_ext = BuildExtension.with_options(use_ninja=True)
    return {"ext_modules": [ext], "cmdclass": {"build_ext": build_ext}}


setup(**_extension_kwargs())
