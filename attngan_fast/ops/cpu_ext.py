"""The CPU extension: fused BatchNorm + GLU kernels of ``csrc/cpu/``, compiled on first use.

On a CPU, G's BatchNorm + GLU on channels-last maps is memory-bound work that ATen runs as half a
dozen passes (statistics, normalisation, GLU, their backwards, and layout or dtype conversions);
``csrc/cpu/batch_norm_glu.cpp`` does it in two passes each way over the map's pixel rows, in
float32 arithmetic for fp32 / bf16 / fp16 maps (``attngan_fast/ops/cpu.py`` uses it).

The first call in a process compiles it with ``torch.utils.cpp_extension.load`` for this CPU
(``-march=native``: the module name carries a hash of the CPU's instruction-set flags, so a cache
shared by different machines never hands one the other's binary) into torch's extension cache
(``TORCH_EXTENSIONS_DIR``, default ``~/.cache/torch_extensions``): 30-50 s on 2 cores, once;
later processes load it in a second. It needs a C++ compiler with OpenMP (``g++`` / ``clang++``)
and ``ninja``. Where the build is impossible or fails, or ``ATTNGAN_FAST_CPU_EXTENSION=0``,
:func:`extension` returns None (saying why once on the ``attngan_fast`` logger) and the ``cpu``
backend keeps ATen's kernels.
"""

from __future__ import annotations

import hashlib
import logging
import os
import platform
import shutil
import threading
import time
from pathlib import Path
from types import ModuleType

from attngan_fast.ops import cuda_build

ENV = "ATTNGAN_FAST_CPU_EXTENSION"
SOURCES = ("batch_norm_glu.cpp", "bindings.cpp")
log = logging.getLogger("attngan_fast")

_lock = threading.Lock()
_state: dict[str, object] = {"tried": False, "module": None, "why": None}


def source_dir() -> Path | None:
    """``csrc/cpu`` of a source checkout, else the copy a wheel carries, else None."""
    for folder in (cuda_build.CHECKOUT_CSRC / "cpu", cuda_build.WHEEL_CSRC / "cpu"):
        if all((folder / name).is_file() for name in SOURCES):
            return folder
    return None


def _cpu_flags() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return " ".join(sorted(line.split(":", 1)[1].split()))
    except OSError:
        pass
    return platform.processor()


def module_name() -> str:
    """The extension's module name: one per CPU instruction set (the code is built for it)."""
    digest = hashlib.sha1(f"{platform.machine()} {_cpu_flags()}".encode()).hexdigest()[:10]
    return f"attngan_fast_cpu_{digest}"


def compile_flags() -> list[str]:
    """Optimised for the CPU at hand, with OpenMP (torch's own runtime at load time: the same
    ``libgomp.so.1`` soname, so ``at::parallel_for`` runs in torch's intra-op thread pool)."""
    flags = ["-O3", "-fopenmp"]
    if platform.machine() in ("x86_64", "AMD64"):
        flags += ["-march=native", "-mprefer-vector-width=512"]
    elif platform.machine() in ("aarch64", "arm64"):
        flags += ["-mcpu=native"]
    return flags


def why_unavailable() -> str | None:
    """None if the extension can be built (or loaded) here, else the reason it cannot."""
    if os.environ.get(ENV, "1").strip().lower() in ("0", "false", "no", "off"):
        return f"{ENV}=0"
    if platform.system() != "Linux":
        return f"the CPU extension is built on Linux only (this is {platform.system()})"
    if source_dir() is None:
        return "this installation carries no CPU sources (csrc/cpu)"
    from torch.utils.cpp_extension import is_ninja_available

    if not is_ninja_available():
        return "ninja is not installed (pip install ninja)"
    compiler = os.environ.get("CXX", "c++")
    if shutil.which(compiler) is None:
        return f"no C++ compiler ({compiler}) on PATH"
    return None


def extension() -> ModuleType | None:
    """The compiled module (built on the first call of the process), or None where it cannot be
    had; the reason is then :func:`status`'s ``why``."""
    if _state["tried"]:
        return _state["module"]  # type: ignore[return-value]
    with _lock:
        if not _state["tried"]:
            _state["module"], _state["why"] = _load()
            _state["tried"] = True
    return _state["module"]  # type: ignore[return-value]


def _load() -> tuple[ModuleType | None, str | None]:
    why = why_unavailable()
    if why is not None:
        log.info("attngan-fast: CPU extension off (%s); BatchNorm+GLU runs on ATen's kernels", why)
        return None, why
    import torch.utils.cpp_extension as cpp

    folder = source_dir()
    name = module_name()
    start = time.perf_counter()
    building = not _in_cache(cpp, name)
    (log.warning if building else log.info)(
        "attngan-fast: %s the CPU extension %s%s",
        "building" if building else "loading",
        name,
        f" for this CPU (30-50 s, once; {ENV}=0 turns it off)" if building else "",
    )
    try:
        module = cpp.load(
            name=name,
            sources=[str(folder / s) for s in SOURCES],
            extra_cflags=compile_flags(),
            extra_ldflags=["-fopenmp"],
            verbose=False,
        )
    except Exception as exc:  # no compiler, no OpenMP, a broken toolchain: keep ATen's kernels
        why = f"the build failed: {type(exc).__name__}: {str(exc).strip().splitlines()[-1:]}"
        log.warning("attngan-fast: CPU extension unavailable (%s); using ATen's kernels", why)
        return None, why
    (log.warning if building else log.info)(
        "attngan-fast: CPU extension ready in %.1f s", time.perf_counter() - start
    )
    return module, None


def _in_cache(cpp: ModuleType, name: str) -> bool:
    """Whether torch's extension cache already holds a build of ``name`` (then loading takes a
    second; torch still rebuilds it if the sources changed)."""
    try:
        folder = Path(cpp._get_build_directory(name, verbose=False))
    except Exception:  # a private helper of torch: absent or changed, say "building"
        return False
    return (folder / f"{name}.so").is_file()


def status() -> dict[str, object]:
    """What ``attngan-fast env`` reports, without building: whether the extension can be had
    here, and whether this process has loaded it."""
    return {
        "name": module_name(),
        "loaded": _state["module"] is not None,
        "unavailable": why_unavailable() if not _state["tried"] else _state["why"],
        "flags": " ".join(compile_flags()),
    }
