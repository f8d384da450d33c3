"""The ``cuda`` backend: hand-written kernels of ``csrc/`` compiled into ``attngan_fast._C``.

Registers the extension's kernels as the ``cuda`` implementations (the kernels' contract of each
op's module) of ``word_attention``, ``damsm_word_similarity`` and ``batch_norm_act``, for fp32,
bf16, fp16 and fp64 CUDA tensors; there is no ``upsample_conv3x3`` kernel yet (so no
``upsample_conv3x3_bn_glu`` either). The extension checks every tensor it is given (device, dtype,
contiguity, shapes) and raises ``TypeError`` / ``ValueError`` naming the op.

``_C`` is built by ``pip install`` where torch has CUDA and a toolkit is found. Where the install
skipped it, the first call of this backend on a CUDA tensor builds it with
``torch.utils.cpp_extension.load`` (the convention of NVIDIA's stylegan2-ada plugins), for the
visible GPUs' architectures (or ``TORCH_CUDA_ARCH_LIST``), into torch's extension cache
(``TORCH_EXTENSIONS_DIR``, default ``~/.cache/torch_extensions``), saying so on the
``attngan_fast`` logger; later processes load it from there in a second.
``ATTNGAN_FAST_NO_CUDA_BUILD=1`` turns that off (the backend is then unavailable without ``_C``).

Limits: ``damsm_word_similarity`` handles captions of at most 32 words (``T <= 32``): the
predicate turns longer ones away, so the automatic choice passes them on to the next backend.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import torch
from torch import Tensor

from attngan_fast.ops import _layout, batch_norm, cuda_build, registry
from attngan_fast.ops.registry import BackendUnavailableError

NO_BUILD_ENV = "ATTNGAN_FAST_NO_CUDA_BUILD"
JIT_NAME = "attngan_fast_C"  # the module name of a first-use build in torch's extension cache
log = logging.getLogger("attngan_fast")

try:
    from attngan_fast import _C
except ImportError as exc:  # not built: no CUDA torch or no nvcc at install time
    _C = None
    _IMPORT_ERROR: str | None = f"{type(exc).__name__}: {exc}"
else:
    _IMPORT_ERROR = None


def why_no_build() -> str | None:
    """None if ``_C`` can be built here on first use, else the reason it cannot."""
    if os.environ.get(NO_BUILD_ENV, "0") not in ("", "0"):
        return f"{NO_BUILD_ENV} is set"
    if torch.version.cuda is None:
        return f"torch {torch.__version__} was built without CUDA"
    if cuda_build.source_dir() is None:
        return "this installation carries no CUDA sources (csrc/)"
    home, how = cuda_build.find_cuda_home()
    if home is None:
        return how
    from torch.utils.cpp_extension import is_ninja_available

    if not is_ninja_available():
        return "ninja is not installed (pip install ninja)"
    return None


def build_extension(verbose: bool = False) -> ModuleType:
    """Compile (or load from torch's extension cache) ``_C`` with ``cpp_extension.load``."""
    why = why_no_build()
    if why is not None:
        raise BackendUnavailableError(
            f"the compiled extension attngan_fast._C is not built ({_IMPORT_ERROR}) and cannot "
            f"be built here: {why}"
        )
    import torch.utils.cpp_extension as cpp

    home, _ = cuda_build.find_cuda_home()
    if not cuda_build.is_toolkit(cpp.CUDA_HOME):  # torch guessed it at import, one folder off
        cpp.CUDA_HOME = str(home)
    folder = cuda_build.source_dir()
    flags = cuda_build.compile_flags()
    log.warning(
        "attngan_fast: the CUDA extension attngan_fast._C is not installed; building it with "
        "torch.utils.cpp_extension.load for %s into %s (minutes the first time, then cached; "
        "%s=1 turns this off)",
        os.environ.get("TORCH_CUDA_ARCH_LIST") or "the visible GPUs",
        os.environ.get("TORCH_EXTENSIONS_DIR") or cpp.get_default_build_root(),
        NO_BUILD_ENV,
    )
    start = time.perf_counter()
    module = cpp.load(
        name=JIT_NAME,
        sources=[str(p) for p in cuda_build.sources(folder)],
        extra_include_paths=[str(folder)],
        extra_cflags=flags["cxx"],
        extra_cuda_cflags=flags["nvcc"],
        verbose=verbose,
    )
    missing = cuda_build.missing_bindings(module)
    if missing:
        raise ImportError(f"the built {JIT_NAME} lacks the bindings {missing}")
    log.warning("attngan_fast: %s ready (%.0f s)", JIT_NAME, time.perf_counter() - start)
    return module


def extension() -> ModuleType:
    """``_C``, built on first use (see the module docstring) when the install skipped it."""
    global _C
    if _C is None:
        _C = build_extension()
    return _C


def _cuobjdump() -> str | None:
    home, _ = cuda_build.find_cuda_home()
    if home is not None and (home / "bin" / "cuobjdump").exists():
        return str(home / "bin" / "cuobjdump")
    try:
        import triton
    except ImportError:
        return shutil.which("cuobjdump")
    bundled = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    return str(bundled) if bundled.exists() else shutil.which("cuobjdump")


def compiled_archs(library: str | Path) -> dict[str, list[str]] | None:
    """``{"sass": ["sm_90", ...], "ptx": ["compute_90", ...]}`` of a built extension (through
    ``cuobjdump``, the toolkit's or Triton's bundled one), None if no cuobjdump can read it."""
    tool = _cuobjdump()
    if tool is None:
        return None
    try:
        out = subprocess.run(
            [tool, "--list-elf", "--list-ptx", str(library)], capture_output=True, text=True,
            timeout=60,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    sass = sorted(set(re.findall(r"\.(sm_\d+a?)\.cubin", out.stdout)))
    ptx = sorted({f"compute_{n}" for n in re.findall(r"\.sm_(\d+a?)\.ptx", out.stdout)})
    return {"sass": sass, "ptx": ptx}


def extension_status() -> dict[str, object]:
    """What a bug report needs about ``_C``, without building anything: whether it is built,
    where from, for which architectures, and why not when it is not."""
    status: dict[str, object] = {"built": _C is not None}
    if _C is not None:
        status["file"] = getattr(_C, "__file__", None)
        status["archs"] = compiled_archs(status["file"]) if status["file"] else None
        status["missing_bindings"] = cuda_build.missing_bindings(_C)
    else:
        status["import_error"] = _IMPORT_ERROR
        why = why_no_build()
        status["first_use_build"] = "possible" if why is None else f"not possible: {why}"
    return status


@torch.compiler.assume_constant_result
def _extension_missing() -> str:
    """Why ``_C`` can neither be imported nor built on first use ("" when it can run)."""
    if _C is not None:
        return ""
    why = why_no_build()
    if why is None:
        return ""
    return (
        f"the compiled extension attngan_fast._C is not built ({_IMPORT_ERROR}) and cannot be "
        f"built on first use: {why}"
    )


def supports(call: registry.Call) -> str | None:
    """CUDA tensors on a usable GPU, with ``_C`` built or buildable on first use."""
    if call.device.type != "cuda":
        return f"the cuda backend runs on CUDA tensors (got {call.device.type})"
    if not registry.cuda_usable():
        return "no usable CUDA GPU (torch.cuda is unavailable)"
    return _extension_missing() or None


MAX_DAMSM_WORDS = 32


def damsm_supports(call: registry.Call) -> str | None:
    """As ``supports``, for captions of at most ``MAX_DAMSM_WORDS`` words."""
    words = call.shape("words")
    if words is not None and words[2] > MAX_DAMSM_WORDS:
        return f"its DAMSM kernel takes at most {MAX_DAMSM_WORDS} words a caption (T = {words[2]})"
    return supports(call)


def binding(name: str) -> Callable:
    """``_C.<name>``, the extension loaded (or built) on the first call."""

    def call_extension(*args):
        return getattr(extension(), name)(*args)

    call_extension.binding = name  # type: ignore[attr-defined]
    return call_extension


def _batch_norm_act_backward(grad_y: Tensor, x: Tensor, *args) -> tuple[Tensor, ...]:
    """``_C.batch_norm_act_backward`` with grad_y brought to x's layout (the kernel needs it)."""
    grad_y = grad_y.contiguous(memory_format=_layout.memory_format(x))
    return extension().batch_norm_act_backward(grad_y, x, *args)


# op -> (predicate, backward): the forward is the binding ``_C.<op>_forward`` as it is
_KERNELS = {
    "word_attention": (supports, binding("word_attention_backward")),
    "damsm_word_similarity": (damsm_supports, binding("damsm_word_similarity_backward")),
    batch_norm.OP: (supports, batch_norm.backward_without_none(_batch_norm_act_backward)),
}
CUDA = registry.Backend("cuda", {"cuda": registry.RANK_CUDA})
for _op, (_supports, _backward) in _KERNELS.items():
    CUDA.register(_op, binding(f"{_op}_forward"), _backward, supports=_supports)
