"""What the CUDA extension ``attngan_fast._C`` is built from, and how: one place for ``setup.py``
(ahead of time), the ``cuda`` backend's first-use build (``torch.utils.cpp_extension.load``),
``tools/check_cuda_kernels.sh`` and ``attngan-fast env``.

* sources: ``csrc/`` of a source checkout (an editable install), else the copy a wheel carries in
  ``attngan_fast/_csrc``;
* the CUDA toolkit: ``CUDA_HOME`` / ``CUDA_PATH``, else the folder of the ``nvcc`` found on
  ``PATH`` as nvcc itself reports it (so a wrapper script on ``PATH`` still leads to the real
  toolkit), else torch's own guess (``torch.utils.cpp_extension.CUDA_HOME``, e.g.
  ``/usr/local/cuda``);
* the C++ standard: the one the installed torch's headers demand (``ATen/ATen.h`` stops below
  it: C++20 for torch 2.14, C++17 for 2.13 and older);
* target architectures: ``TORCH_CUDA_ARCH_LIST``, else ``DEFAULT_ARCHS`` (sm_80, 86, 89, 90,
  plus PTX of sm_90 so that newer cards JIT-compile it instead of finding "no kernel image").

This module imports nothing of the package and torch only inside functions, so ``setup.py`` can
load it by path before torch's extension machinery is imported. ``python cuda_build.py std``
prints the C++ standard flag (for shell scripts).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parents[1]
CHECKOUT_CSRC = PACKAGE_DIR.parent / "csrc"
WHEEL_CSRC = PACKAGE_DIR / "_csrc"
DEFAULT_ARCHS = "8.0;8.6;8.9;9.0+PTX"
# Python functions of the ``cuda`` backend, each a binding of ``_C`` (checked after every build).
BINDINGS = (
    "word_attention_forward",
    "word_attention_backward",
    "damsm_word_similarity_forward",
    "damsm_word_similarity_backward",
    "batch_norm_act_forward",
    "batch_norm_act_backward",
)
_STANDARDS = {"201703": "c++17", "202002": "c++20", "202302": "c++23"}


def source_dir() -> Path | None:
    """The folder holding the CUDA sources (checkout first), or None when neither exists."""
    for folder in (CHECKOUT_CSRC, WHEEL_CSRC):
        if folder.is_dir() and any(folder.glob("*.cu")):
            return folder
    return None


def sources(folder: Path) -> list[Path]:
    """The translation units of the extension: every ``*.cu`` and ``*.cpp`` of ``folder``."""
    return sorted(folder.glob("*.cu")) + sorted(folder.glob("*.cpp"))


def _toolkit_of_nvcc(nvcc: str) -> Path | None:
    """The toolkit folder of ``nvcc`` as nvcc reports it (``_HERE_`` of ``--dryrun``: the real
    bin folder, also when ``nvcc`` is a wrapper script elsewhere)."""
    try:
        out = subprocess.run(
            [nvcc, "--dryrun", "-E", "-x", "cu", os.devnull],
            capture_output=True,
            text=True,
            timeout=60,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    found = re.search(r"^#\$ _HERE_=(.+)$", out.stdout + out.stderr, re.MULTILINE)
    if found:
        return Path(found.group(1).strip()).parent
    return Path(nvcc).resolve().parent.parent


def is_toolkit(folder: Path | str | None) -> bool:
    """``folder`` holds ``bin/nvcc`` and the runtime headers (``cuda_runtime.h``)."""
    if not folder:
        return False
    folder = Path(folder)
    headers = [folder / "include", *folder.glob("targets/*/include")]
    return (folder / "bin" / "nvcc").exists() and any(
        (h / "cuda_runtime.h").exists() for h in headers
    )


def find_cuda_home() -> tuple[Path | None, str]:
    """(toolkit folder or None, how it was found or why not) in the order of the docstring."""
    for var in ("CUDA_HOME", "CUDA_PATH"):
        value = os.environ.get(var)
        if value:
            if is_toolkit(value):
                return Path(value), f"${var}"
            return None, f"${var}={value} holds no CUDA toolkit (bin/nvcc, cuda_runtime.h)"
    nvcc = shutil.which("nvcc")
    if nvcc:
        home = _toolkit_of_nvcc(nvcc)
        if is_toolkit(home):
            return home, f"nvcc on PATH ({nvcc})"
    try:
        from torch.utils.cpp_extension import CUDA_HOME
    except Exception:  # torch missing or broken: nothing more to ask
        CUDA_HOME = None
    if is_toolkit(CUDA_HOME):
        return Path(CUDA_HOME), "torch.utils.cpp_extension.CUDA_HOME"
    return None, "no CUDA toolkit found (set CUDA_HOME, or put nvcc on PATH)"


def nvcc_version(cuda_home: Path) -> str | None:
    """``"13.0"`` for the toolkit's nvcc, None if it cannot be run."""
    try:
        out = subprocess.run(
            [str(cuda_home / "bin" / "nvcc"), "--version"], capture_output=True, text=True,
            timeout=60,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    found = re.search(r"release (\d+\.\d+)", out.stdout)
    return found.group(1) if found else None


def cxx_standard() -> str:
    """The C++ standard torch's headers require (``c++20`` for torch 2.14), ``c++17`` if unknown.

    Read from the ``__cplusplus < NNNNNNL`` guard of ``ATen/ATen.h`` in torch's include folder.
    """
    try:
        from torch.utils.cpp_extension import include_paths

        aten = Path(include_paths()[0]) / "ATen" / "ATen.h"
        text = aten.read_text(errors="replace")
    except Exception:  # no torch, or headers not shipped: the oldest standard torch accepts
        return "c++17"
    found = re.search(r"__cplusplus\s*<\s*(\d{6})L", text)
    return _STANDARDS.get(found.group(1), "c++17") if found else "c++17"


def compile_flags() -> dict[str, list[str]]:
    """Flags of the host compiler (``cxx``) and nvcc beyond torch's own."""
    std = f"-std={cxx_standard()}"
    return {"cxx": ["-O3", std], "nvcc": ["-O3", std, "-lineinfo"]}


def arch_list() -> str:
    """``TORCH_CUDA_ARCH_LIST`` if set, else ``DEFAULT_ARCHS``."""
    return os.environ.get("TORCH_CUDA_ARCH_LIST") or DEFAULT_ARCHS


def missing_bindings(module: object) -> list[str]:
    """The names of ``BINDINGS`` that ``module`` (an imported ``_C``) lacks."""
    return [name for name in BINDINGS if not callable(getattr(module, name, None))]


if __name__ == "__main__":
    if sys.argv[1:] == ["std"]:
        print(f"-std={cxx_standard()}")
    elif sys.argv[1:] == ["cuda-home"]:
        home, how = find_cuda_home()
        print(home if home else "")
        print(how, file=sys.stderr)
    else:
        sys.exit("usage: python cuda_build.py std | cuda-home")
