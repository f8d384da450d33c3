"""The ``cuda`` backend: hand-written kernels of ``csrc/`` compiled into ``attngan_fast._C``.

Implements the backend contract (see each op's module) of ``word_attention``,
``damsm_word_similarity`` and ``batch_norm_act`` for fp32, bf16, fp16 (and fp64) CUDA tensors;
there is no ``upsample_conv3x3`` kernel yet (so no ``upsample_conv3x3_bn_glu`` either). The
extension checks every tensor it is given (device, dtype, contiguity, shapes) and raises
``TypeError`` / ``ValueError`` naming the op.

``_C`` is built by ``pip install`` where torch has CUDA and a toolkit is found. Where the install
skipped it, the first call of this backend on a CUDA tensor builds it with
``torch.utils.cpp_extension.load`` (the convention of NVIDIA's stylegan2-ada plugins), for the
visible GPUs' architectures (or ``TORCH_CUDA_ARCH_LIST``), into torch's extension cache
(``TORCH_EXTENSIONS_DIR``, default ``~/.cache/torch_extensions``), saying so on the
``attngan_fast`` logger; later processes load it from there in a second.
``ATTNGAN_FAST_NO_CUDA_BUILD=1`` turns that off (the backend is then unavailable without ``_C``).

Limits: ``damsm_word_similarity`` handles captions of at most 32 words (``T <= 32``); larger
shapes raise ``ValueError`` pointing to the ``triton`` and ``torch`` backends.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import time
from pathlib import Path
from types import ModuleType

import torch
from torch import Tensor

from attngan_fast.ops import _layout, cuda_build
from attngan_fast.ops._backend import BackendUnavailableError

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


def _why_unavailable(device: torch.device) -> str | None:
    if device.type != "cuda":
        return f"the cuda backend runs on CUDA tensors (got {device.type})"
    if _C is None:
        why = why_no_build()
        if why is not None:
            return (
                f"the compiled extension attngan_fast._C is not built ({_IMPORT_ERROR}) and "
                f"cannot be built on first use: {why}"
            )
    return None


# --- word_attention ---------------------------------------------------------------------------


def word_attention_supported(device: torch.device) -> str | None:
    return _why_unavailable(device)


def word_attention_forward(
    query: Tensor, source: Tensor, mask: Tensor | None, need_attn: bool, legacy_mask: bool
) -> tuple[Tensor, Tensor, Tensor]:
    """``(context B x C x N, attn B x T x N or empty, lse B x N float32/float64)``."""
    return extension().word_attention_forward(query, source, mask, need_attn, legacy_mask)


def word_attention_backward(
    grad_context: Tensor,
    grad_attn: Tensor | None,
    query: Tensor,
    source: Tensor,
    mask: Tensor | None,
    lse: Tensor,
    legacy_mask: bool,
) -> tuple[Tensor, Tensor]:
    """``(grad_query B x C x N, grad_source B x C x T)``."""
    return extension().word_attention_backward(
        grad_context, grad_attn, query, source, mask, lse, legacy_mask
    )


# --- damsm_word_similarity --------------------------------------------------------------------


def damsm_word_similarity_supported(device: torch.device) -> str | None:
    return _why_unavailable(device)


def damsm_word_similarity_forward(
    img_local: Tensor, words: Tensor, cap_lens: Tensor, gamma1: float, gamma2: float
) -> Tensor:
    """S, B x B float32 (float64 for float64 inputs): image j (row) against caption i (column)."""
    return extension().damsm_word_similarity_forward(img_local, words, cap_lens, gamma1, gamma2)


def damsm_word_similarity_backward(
    grad_s: Tensor,
    img_local: Tensor,
    words: Tensor,
    cap_lens: Tensor,
    gamma1: float,
    gamma2: float,
) -> tuple[Tensor, Tensor]:
    """``(grad_img_local B x D x R, grad_words B x D x T)``, zero beyond each caption's length."""
    return extension().damsm_word_similarity_backward(
        grad_s, img_local, words, cap_lens, gamma1, gamma2
    )


# --- batch_norm_act ---------------------------------------------------------------------------


def batch_norm_act_supported(device: torch.device) -> str | None:
    return _why_unavailable(device)


def batch_norm_act_forward(
    x: Tensor,
    residual: Tensor | None,
    weight: Tensor | None,
    bias: Tensor | None,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    training: bool,
    eps: float,
    mode: str,
) -> tuple[Tensor, Tensor, Tensor]:
    """``(y, batch mean C, biased batch var C)``; the statistics are empty in eval mode."""
    return extension().batch_norm_act_forward(
        x, residual, weight, bias, running_mean, running_var, training, eps, mode
    )


def batch_norm_act_backward(
    grad_y: Tensor,
    x: Tensor,
    weight: Tensor | None,
    bias: Tensor | None,
    mean: Tensor,
    var: Tensor,
    training: bool,
    eps: float,
    mode: str,
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """``(grad_x, grad_weight or None, grad_bias or None)``; grad_y is brought to x's layout."""
    grad_y = grad_y.contiguous(memory_format=_layout.memory_format(x))
    return extension().batch_norm_act_backward(
        grad_y, x, weight, bias, mean, var, training, eps, mode
    )


# --- upsample_conv3x3 -------------------------------------------------------------------------


def upsample_conv3x3_supported(device: torch.device) -> str | None:
    return (
        "the cuda backend has no upsample_conv3x3 kernel yet; use backend='triton' (the "
        "four-phase kernel) or 'torch'"
    )


def upsample_conv3x3_bn_glu_supported(device: torch.device) -> str | None:
    return (
        "the cuda backend has no upsample_conv3x3 kernel yet (so no fused upBlock); use "
        "backend='triton' (statistics from the conv epilogue) or 'torch'"
    )
