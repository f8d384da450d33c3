"""The ``cuda`` backend: hand-written kernels of ``csrc/`` compiled into ``attngan_fast._C``.

Implements the backend contract (see each op's module) of ``word_attention``,
``damsm_word_similarity`` and ``batch_norm_act`` for fp32, bf16, fp16 (and fp64) CUDA tensors;
there is no ``upsample_conv3x3`` kernel yet (so no ``upsample_conv3x3_bn_glu`` either). The
extension checks every tensor it is given (device, dtype, contiguity, shapes) and raises
``TypeError`` / ``ValueError`` naming the op.

Limits: ``damsm_word_similarity`` handles captions of at most 32 words (``T <= 32``); larger
shapes raise ``ValueError`` pointing to the ``triton`` and ``torch`` backends.
"""

from __future__ import annotations

import torch
from torch import Tensor

from attngan_fast.ops import _layout

try:
    from attngan_fast import _C
except ImportError as exc:  # not built: no CUDA torch or no nvcc at install time
    _C = None
    _IMPORT_ERROR: str | None = f"{type(exc).__name__}: {exc}"
else:
    _IMPORT_ERROR = None


def _why_unavailable(device: torch.device) -> str | None:
    if _C is None:
        return f"the compiled extension attngan_fast._C is not built ({_IMPORT_ERROR})"
    if device.type != "cuda":
        return f"the cuda backend runs on CUDA tensors (got {device.type})"
    return None


# --- word_attention ---------------------------------------------------------------------------


def word_attention_supported(device: torch.device) -> str | None:
    return _why_unavailable(device)


def word_attention_forward(
    query: Tensor, source: Tensor, mask: Tensor | None, need_attn: bool, legacy_mask: bool
) -> tuple[Tensor, Tensor, Tensor]:
    """``(context B x C x N, attn B x T x N or empty, lse B x N float32/float64)``."""
    return _C.word_attention_forward(query, source, mask, need_attn, legacy_mask)


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
    return _C.word_attention_backward(
        grad_context, grad_attn, query, source, mask, lse, legacy_mask
    )


# --- damsm_word_similarity --------------------------------------------------------------------


def damsm_word_similarity_supported(device: torch.device) -> str | None:
    return _why_unavailable(device)


def damsm_word_similarity_forward(
    img_local: Tensor, words: Tensor, cap_lens: Tensor, gamma1: float, gamma2: float
) -> Tensor:
    """S, B x B float32 (float64 for float64 inputs): image j (row) against caption i (column)."""
    return _C.damsm_word_similarity_forward(img_local, words, cap_lens, gamma1, gamma2)


def damsm_word_similarity_backward(
    grad_s: Tensor,
    img_local: Tensor,
    words: Tensor,
    cap_lens: Tensor,
    gamma1: float,
    gamma2: float,
) -> tuple[Tensor, Tensor]:
    """``(grad_img_local B x D x R, grad_words B x D x T)``, zero beyond each caption's length."""
    return _C.damsm_word_similarity_backward(grad_s, img_local, words, cap_lens, gamma1, gamma2)


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
    return _C.batch_norm_act_forward(
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
    return _C.batch_norm_act_backward(grad_y, x, weight, bias, mean, var, training, eps, mode)


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
