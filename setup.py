"""Build script: pure Python + Triton always; the CUDA extension ``attngan_fast._C`` when possible.

The compiled extension is built from ``csrc/`` when

* ``ATTNGAN_FAST_FORCE_CUDA=1``, or
* torch was built with CUDA and a CUDA toolkit is found (``CUDA_HOME`` / ``CUDA_PATH``, the
  toolkit of the ``nvcc`` on ``PATH`` as nvcc reports it, or torch's own guess
  ``torch.utils.cpp_extension.CUDA_HOME``),

and skipped (the package still installs and runs on the Triton and PyTorch backends; the
``cuda`` backend then builds ``_C`` on first use) when ``ATTNGAN_FAST_SKIP_CUDA=1`` or neither
condition holds. Target architectures come from ``TORCH_CUDA_ARCH_LIST`` (default
``8.0;8.6;8.9;9.0+PTX``); the C++ standard is the one the installed torch's headers require.
Either way the CUDA sources are copied into the package (``attngan_fast/_csrc``) for that
first-use build. The logic lives in ``attngan_fast/ops/cuda_build.py``.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).parent
CSRC = ROOT / "csrc"


def _load_cuda_build():
    """``attngan_fast/ops/cuda_build.py`` by path (the package's __init__ needs torch)."""
    spec = importlib.util.spec_from_file_location(
        "_attngan_fast_cuda_build", ROOT / "attngan_fast" / "ops" / "cuda_build.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


cuda_build = _load_cuda_build()


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
    home, how = cuda_build.find_cuda_home()
    if home is None:
        return False, how
    # torch.utils.cpp_extension reads CUDA_HOME once, when first imported (after this)
    os.environ["CUDA_HOME"] = str(home)
    return True, f"torch {torch.__version__} has CUDA {torch.version.cuda}; toolkit {home} ({how})"


class BuildPyWithSources(build_py):
    """build_py that also copies ``csrc/`` (CUDA) and ``csrc/cpu/`` (the CPU extension) into the
    package, for their first-use builds."""

    def run(self) -> None:
        super().run()
        target = Path(self.build_lib) / "attngan_fast" / "_csrc"
        for folder, dest in ((CSRC, target), (CSRC / "cpu", target / "cpu")):
            dest.mkdir(parents=True, exist_ok=True)
            for source in folder.iterdir():
                if source.suffix in (".cu", ".cuh", ".cpp", ".h"):
                    shutil.copy2(source, dest / source.name)


def _extension_kwargs() -> dict:
    cmdclass: dict = {"build_py": BuildPyWithSources}
    build, why = _want_cuda_extension()
    sources = [str(p.relative_to(ROOT)) for p in cuda_build.sources(CSRC)]
    if not build or not sources:
        reason = why if not build else "csrc/ holds no sources yet"
        print(f"attngan-fast: skipping the CUDA extension ({reason})", file=sys.stderr)
        return {"cmdclass": cmdclass}
    os.environ["TORCH_CUDA_ARCH_LIST"] = cuda_build.arch_list()
    flags = cuda_build.compile_flags()
    print(
        f"attngan-fast: building the CUDA extension ({why}; archs "
        f"{os.environ['TORCH_CUDA_ARCH_LIST']}, {flags['cxx'][-1]})",
        file=sys.stderr,
    )
    from torch.utils.cpp_extension import BuildExtension, CUDAExtension

    ext = CUDAExtension(
        name="attngan_fast._C",
        sources=sources,
        include_dirs=[str(CSRC)],
        extra_compile_args=flags,
    )
    cmdclass["build_ext"] = BuildExtension.with_options(use_ninja=True)
    return {"ext_modules": [ext], "cmdclass": cmdclass}


setup(**_extension_kwargs())
