"""CPU implementations of the fused ops, on PyTorch's native CPU kernels (oneDNN / ATen).

On a CPU the fastest way to run G's BatchNorm + GLU / + residual is PyTorch's own batch-norm
kernels (one vectorised pass for the statistics, one to normalise, a fused backward), not the
``torch`` backend's closed-form formulas, which run a dozen elementwise passes in float32. The
convolutions are oneDNN's, fastest in channels-last and, on CPUs with native bf16 (AVX-512 BF16 /
AMX), in bfloat16. Measured on a 2-core Xeon (AVX-512 BF16 + AMX): ``benchmarks/NOTES.md``.

This module is the ``cpu`` backend, first in the automatic order on CPU tensors (the ``torch``
backend and the ``reference`` stay selectable by name, ``use_backend`` or the environment variable):

* ``batch_norm_act``: kernels with the op's contract (``batch_norm_act_forward`` /
  ``batch_norm_act_backward``, see ``attngan_fast/ops/batch_norm.py``). BatchNorm + GLU on a
  channels-last map or a B x 2C matrix (fp32 / bf16 / fp16): the CPU extension's fused kernels
  (``csrc/cpu/``, built on first use by ``attngan_fast/ops/cpu_ext.py``), two passes each way.
  Otherwise, and wherever the extension cannot be built: native batch norm, then GLU or
  + residual; the backward recomputes the normalised map for the GLU and runs ATen's batch-norm
  backward;
* ``upsample_conv3x3``: the reference composition (nearest upsample, then oneDNN's 3x3 kernel),
  differentiated by autograd;
* ``upsample_conv3x3_bn_glu``: that convolution, then this backend's BatchNorm + GLU;
* ``word_attention``: the reference's arithmetic (ATen's fused softmax, the mask broadcast per
  sample), differentiated by autograd;
* ``damsm_word_similarity``: the reference in float32, differentiated by autograd.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from attngan_fast.ops import (
    _checks,
    _layout,
    batch_norm,
    cpu_ext,
    registry,
    upsample_conv,
    upsample_conv_bn,
)
from attngan_fast.ops.damsm import OP as DAMSM_SIMILARITY
from attngan_fast.ops.damsm import damsm_word_similarity_reference
from attngan_fast.ops.word_attention import OP as WORD_ATTENTION
from attngan_fast.ops.word_attention import word_attention_reference

_CL = torch.channels_last

# --- the CPU's capabilities -------------------------------------------------------------------


def _cpuinfo_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def native_bf16() -> bool:
    """True when this CPU computes bf16 dot products natively (AVX-512 BF16 or AMX-BF16), so that
    oneDNN runs bf16 convolutions and matmuls faster than fp32 ones. Elsewhere bf16 is emulated
    (converted to fp32 and back) and slower than fp32."""
    cpu = getattr(torch, "cpu", None)
    try:
        return bool(cpu._is_avx512_bf16_supported() or cpu._is_amx_tile_supported())
    except AttributeError:  # an older or newer torch without these private probes
        flags = _cpuinfo_flags()
        return bool({"avx512_bf16", "amx_bf16"} & flags)


# --- backend functions (contract of attngan_fast.ops.batch_norm) ------------------------------


def _params(x: Tensor, weight: Tensor | None, bias: Tensor | None) -> tuple[Tensor, Tensor]:
    """Weight and bias as the native kernels want them: present, in the accumulation dtype (the
    native kernels take float32 parameters beside bf16 / fp16 x, else x's own dtype)."""
    acc = _checks.acc_dtype(x.dtype)
    channels = x.shape[1]
    w = weight.to(acc) if weight is not None else x.new_ones(channels, dtype=acc)
    b = bias.to(acc) if bias is not None else x.new_zeros(channels, dtype=acc)
    return w, b


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
    """``batch_norm_act_forward`` of the contract. ``glu`` on a channels-last map or a B x 2C
    matrix: the CPU extension's fused kernel where it is available (``_fused_glu_forward``).
    Otherwise native batch norm (statistics accumulated in float32 for low-precision x), then
    ``glu`` or ``+ residual``; bf16 / fp16 maps run in NCHW (``_low_precision_forward``)."""
    w, b = _params(x, weight, bias)
    ext = _fused_glu_extension(x) if mode == "glu" else None
    if ext is not None:
        return _fused_glu_forward(ext, x, w, b, running_mean, running_var, training, eps)
    if x.dtype in _LOW:
        return _low_precision_forward(
            x, residual, w, b, running_mean, running_var, training, eps, mode
        )
    acc = _checks.acc_dtype(x.dtype)
    if training:
        z, mean, invstd = torch.ops.aten._native_batch_norm_legit.no_stats(x, w, b, True, 0.0, eps)
        var = invstd.to(acc).pow(-2) - eps
        mean = mean.to(acc)
    else:
        z = torch.ops.aten._native_batch_norm_legit_no_training(
            x, w, b, running_mean.to(acc), running_var.to(acc), 0.0, eps
        )[0]
        mean, var = x.new_empty(0, dtype=acc), x.new_empty(0, dtype=acc)
    y = F.glu(z, dim=1) if mode == "glu" else z.add_(residual)
    return y, mean, var


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
    """``batch_norm_act_backward`` of the contract: the GLU's backward on the recomputed batch-norm
    output (one native pass), then the native batch-norm backward. Both in float32 for bf16 / fp16
    inputs (the gradients of the BatchNorm parameters sum B H W terms; rounding them to bf16 first
    would cost ~2^-9 relative error), grad_x rounded to x's dtype once at the end. ``glu`` on a
    channels-last map or a B x 2C matrix: the CPU extension's fused kernel where available."""
    ext = _fused_glu_extension(x) if mode == "glu" else None
    if ext is not None:
        return _fused_glu_backward(ext, grad_y, x, weight, bias, mean, var, training, eps)
    if x.dtype in _LOW:
        return _low_precision_backward(grad_y, x, weight, bias, mean, var, training, eps, mode)
    acc = _checks.acc_dtype(x.dtype)
    xa = x.to(acc)
    w, b = _params(xa, weight, bias)
    mean, var = mean.to(acc), var.to(acc)
    invstd = torch.rsqrt(var + eps)
    grad_y = grad_y.to(acc)
    if mode == "glu":
        z = torch.ops.aten._native_batch_norm_legit_no_training(xa, w, b, mean, var, 0.0, eps)[0]
        grad_z = glu_backward(grad_y, z)
    else:
        grad_z = grad_y
    need = [True, weight is not None, bias is not None]
    grad_x, grad_w, grad_b = torch.ops.aten.native_batch_norm_backward(
        grad_z, xa, w, mean, var, mean, invstd, training, eps, need
    )
    return (
        grad_x.to(x.dtype),
        grad_w.to(weight.dtype) if weight is not None else None,
        grad_b.to(bias.dtype) if bias is not None else None,
    )


# bf16 / fp16 maps: NCHW in their own dtype. ATen's batch-norm and GLU kernels take them as they
# are (float32 statistics and sums inside, float32 parameters); in channels-last the GLU's halves
# are strided and its kernels several times slower. The backward runs in float32 NCHW (the
# parameters' gradients need a float32 GLU gradient); one contiguous conversion pass is cheap.
_LOW = (torch.bfloat16, torch.float16)


def _low_precision_forward(
    x: Tensor,
    residual: Tensor | None,
    w: Tensor,
    b: Tensor,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    training: bool,
    eps: float,
    mode: str,
) -> tuple[Tensor, Tensor, Tensor]:
    """The forward for bf16 / fp16 x: native batch norm, statistics in float32; y in x's dtype and
    memory format. GLU runs in NCHW (its halves are strided in channels-last); ``add`` keeps the
    layout."""
    layout = _layout.memory_format(x)
    xn = x.contiguous() if mode == "glu" else x
    if training:
        z, mean, invstd = torch.ops.aten._native_batch_norm_legit.no_stats(xn, w, b, True, 0.0, eps)
        mean, var = mean.float(), invstd.float().pow(-2) - eps
    else:
        z = torch.ops.aten._native_batch_norm_legit_no_training(
            xn, w, b, running_mean.float(), running_var.float(), 0.0, eps
        )[0]
        mean, var = x.new_empty(0, dtype=torch.float32), x.new_empty(0, dtype=torch.float32)
    if mode == "glu":
        return F.glu(z, dim=1).contiguous(memory_format=layout), mean, var
    return z.add_(residual), mean, var


def _low_precision_backward(
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
    """The backward for bf16 / fp16 x. ``glu``: in NCHW float32, x and grad_y converted once,
    ATen's GLU backward on the recomputed normalised map, its batch-norm backward, grad_x rounded
    to x's dtype and memory format once at the end (the GLU's gradient stays in float32: the
    BatchNorm parameters' gradients sum B H W of its terms). ``add``: grad_y is the normalised
    map's gradient as it is, so ATen's batch-norm backward runs on x and grad_y in their dtype
    and layout (float32 sums inside)."""
    layout = _layout.memory_format(x)
    if mode == "add":
        return _batch_norm_backward_as_is(grad_y, x, weight, bias, mean, var, training, eps)
    xf = x.to(torch.float32, memory_format=torch.contiguous_format)
    w, b = _params(xf, weight, bias)
    mean, var = mean.float(), var.float()
    invstd = torch.rsqrt(var + eps)
    grad_y = grad_y.to(torch.float32, memory_format=torch.contiguous_format)
    if mode == "glu":
        z = torch.ops.aten._native_batch_norm_legit_no_training(xf, w, b, mean, var, 0.0, eps)[0]
        grad_z = torch.ops.aten.glu_backward(grad_y, z, 1)
    else:
        grad_z = grad_y
    need = [True, weight is not None, bias is not None]
    grad_x, grad_w, grad_b = torch.ops.aten.native_batch_norm_backward(
        grad_z, xf, w, mean, var, mean, invstd, training, eps, need
    )
    return (
        grad_x.to(x.dtype, memory_format=layout),
        grad_w.to(weight.dtype) if weight is not None else None,
        grad_b.to(bias.dtype) if bias is not None else None,
    )


def _batch_norm_backward_as_is(
    grad_y: Tensor,
    x: Tensor,
    weight: Tensor | None,
    bias: Tensor | None,
    mean: Tensor,
    var: Tensor,
    training: bool,
    eps: float,
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """ATen's batch-norm backward of ``x`` (any floating dtype, its layout) for ``grad_y``."""
    w, _ = _params(x, weight, bias)
    mean, var = mean.float(), var.float()
    grad_y = grad_y.to(x.dtype).contiguous(memory_format=_layout.memory_format(x))
    need = [True, weight is not None, bias is not None]
    grad_x, grad_w, grad_b = torch.ops.aten.native_batch_norm_backward(
        grad_y, x, w, mean, var, mean, torch.rsqrt(var + eps), training, eps, need
    )
    return (
        grad_x,
        grad_w.to(weight.dtype) if weight is not None else None,
        grad_b.to(bias.dtype) if bias is not None else None,
    )


# BatchNorm + GLU on the CPU extension (``attngan_fast/ops/cpu_ext.py``): fp32 / bf16 / fp16
# maps whose memory is a matrix of pixel rows (channels-last B x 2C x H x W, or B x 2C), in two
# passes each way instead of ATen's half dozen (and no NCHW round trip for bf16).
_FUSED_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def _rows_layout(x: Tensor) -> bool:
    """True when x's memory is the (B H W) x C matrix of its pixel rows."""
    if x.dim() == 2:
        return x.is_contiguous()
    return x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=_CL)


def _fused_glu_extension(x: Tensor):
    """The CPU extension if it takes this map (and can be had here), else None."""
    if x.dtype not in _FUSED_DTYPES or x.numel() == 0 or x.shape[1] % 2 or not _rows_layout(x):
        return None
    return cpu_ext.extension()


def _as_rows(t: Tensor) -> Tensor:
    """A B x C matrix as it is, a channels-last map as its pixel rows (views)."""
    return t if t.dim() == 2 else _pixel_rows(t)


def _from_rows(rows: Tensor, like: Tensor) -> Tensor:
    """Pixel rows (P x C) back to a map shaped like ``like`` (channels-last), or the matrix."""
    if like.dim() == 2:
        return rows
    b, _, h, w = like.shape
    return rows.view(b, h, w, rows.shape[1]).permute(0, 3, 1, 2)


def _fused_glu_forward(
    ext,
    x: Tensor,
    w: Tensor,
    b: Tensor,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    training: bool,
    eps: float,
) -> tuple[Tensor, Tensor, Tensor]:
    """The forward on the extension: y in x's dtype and layout, batch statistics in float32."""
    mean_in = w if training else running_mean  # (unused in training)
    var_in = w if training else running_var
    y, mean, var = ext.batch_norm_glu_rows_forward(
        _as_rows(x), w.float(), b.float(), mean_in, var_in, training, eps
    )
    if not training:
        mean, var = x.new_empty(0, dtype=torch.float32), x.new_empty(0, dtype=torch.float32)
    return _from_rows(y, x), mean, var


def _fused_glu_backward(
    ext,
    grad_y: Tensor,
    x: Tensor,
    weight: Tensor | None,
    bias: Tensor | None,
    mean: Tensor,
    var: Tensor,
    training: bool,
    eps: float,
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """The backward on the extension: grad_y brought to x's dtype and layout (one pass, only if
    it differs: non-contiguous, stride-0 or NCHW gradients), grad_x in x's dtype and layout, the
    parameters' gradients summed in float64 and returned in their dtype."""
    channels = x.shape[1]
    w = weight.float() if weight is not None else x.new_ones(channels, dtype=torch.float32)
    b = bias.float() if bias is not None else x.new_zeros(channels, dtype=torch.float32)
    fmt = _CL if x.dim() == 4 else torch.contiguous_format
    gy = grad_y.to(x.dtype).contiguous(memory_format=fmt)
    grad_x, grad_w, grad_b = ext.batch_norm_glu_rows_backward(
        _as_rows(gy), _as_rows(x), w, b, mean, var, training, eps
    )
    return (
        _from_rows(grad_x, x),
        grad_w.to(weight.dtype) if weight is not None else None,
        grad_b.to(bias.dtype) if bias is not None else None,
    )


def _pixel_rows(t: Tensor) -> Tensor:
    """A channels-last B x C x H x W map as the (B H W) x C matrix it is in memory (a view)."""
    return t.permute(0, 2, 3, 1).reshape(-1, t.shape[1])


def glu_backward(grad_y: Tensor, z: Tensor) -> Tensor:
    """Gradient of ``F.glu(z, dim=1)`` for ``grad_y``, in z's memory format. A channels-last map
    goes through ATen's kernel as its (B H W) x 2C matrix of pixel rows, where each row holds the
    two halves contiguously; on the 4-D channels-last tensors the halves are strided and the
    same arithmetic is 4-8x slower (one core, 16 x 32 x 32..128 px)."""
    if z.dim() != 4 or z.is_contiguous() or not z.is_contiguous(memory_format=_CL):
        return torch.ops.aten.glu_backward(grad_y, z, 1)
    b, c, h, w = z.shape
    grad_y = grad_y.contiguous(memory_format=_CL)
    rows = torch.ops.aten.glu_backward(_pixel_rows(grad_y), _pixel_rows(z), 1)
    return rows.view(b, h, w, c).permute(0, 3, 1, 2)


# --- registration -----------------------------------------------------------------------------


def word_attention_cpu(
    query: Tensor,
    source: Tensor,
    mask: Tensor | None,
    need_attn: bool = True,
    legacy_mask: bool = False,
) -> tuple[Tensor, Tensor | None]:
    """Word attention on the CPU (composite form, differentiated by autograd): the reference's
    arithmetic with ATen's fused softmax, the per-sample mask broadcast over the regions instead
    of expanded, and empty rows (every word masked) found from the B x T mask instead of a pass
    over the B x N x T scores. The original's misaligned mask (``legacy_mask``) varies per region:
    the reference composition. Returns ``(context B x C x N, attn B x T x N or None)``."""
    if mask is None or legacy_mask:
        return word_attention_reference(query, source, mask, need_attn, legacy_mask)
    acc = _checks.acc_dtype(query.dtype)
    scores = torch.bmm(query.transpose(1, 2), source).to(acc)  # B x N x T
    scores = scores.masked_fill(mask[:, None, :], float("-inf"))
    attn = torch.softmax(scores, dim=-1)
    empty = mask.all(dim=1)  # B: a sample without a valid word gets zeros, not NaN
    attn = attn.masked_fill(empty[:, None, None], 0.0)
    attn = attn.to(query.dtype)
    context = torch.bmm(source, attn.transpose(1, 2))
    return context, (attn.transpose(1, 2) if need_attn else None)


def damsm_word_similarity_cpu(
    img_local: Tensor, words: Tensor, cap_lens: Tensor, gamma1: float, gamma2: float
) -> Tensor:
    """The DAMSM word similarity S (B x B) on the CPU (composite form): the reference in float32,
    as the torch backend computes its forward (the same numbers), differentiated by autograd
    instead of the torch backend's recomputing closed-form backward. img_local B x D x R, words
    B x D x T, cap_lens B."""
    acc = _checks.acc_dtype(img_local.dtype)
    with torch.autocast("cpu", enabled=False):  # float32 inside, under a bf16 step too
        return damsm_word_similarity_reference(
            img_local.to(acc), words.to(acc), cap_lens, gamma1, gamma2
        )


def cpu_only(call: registry.Call) -> str | None:
    """The cpu backend's predicate: CPU tensors of any floating dtype."""
    if call.device.type == "cpu":
        return None
    return f"the cpu backend runs on CPU tensors (got {call.device})"


def upsample_conv3x3_bn_glu(
    x: Tensor,
    conv_weight: Tensor,
    weight: Tensor | None,
    bias: Tensor | None,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    training: bool,
    momentum: float,
    eps: float,
) -> Tensor:
    """G's upBlock on the CPU (composite form): oneDNN's 3x3 convolution of the upsampled map,
    then this backend's BatchNorm + GLU. B x Cin x H x W -> B x C x 2H x 2W."""
    z = upsample_conv.upsample_conv3x3_reference(x, conv_weight)
    return batch_norm.batch_norm_glu(
        z, weight, bias, running_mean, running_var, training, momentum, eps, backend=CPU.name
    )


CPU = registry.Backend("cpu", {"cpu": registry.RANK_CPU})
CPU.register(
    batch_norm.OP,
    batch_norm_act_forward,
    batch_norm.backward_without_none(batch_norm_act_backward),
    supports=cpu_only,
)
# upsample + conv3x3 is the reference's composition: oneDNN's 3x3 kernel beats the four-phase
# form of the torch backend in channels-last and bf16 (the fast path's layout and precision).
CPU.register(
    upsample_conv.OP, supports=cpu_only, composite=upsample_conv.upsample_conv3x3_reference
)
CPU.register(upsample_conv_bn.OP, supports=cpu_only, composite=upsample_conv3x3_bn_glu)
# Word attention: ATen's fused softmax and its backward under autograd beat the torch backend's
# log-sum-exp contract (a dozen passes over B x N x T) by 2.3x (demo shape, 1 core).
CPU.register(WORD_ATTENTION, supports=cpu_only, composite=word_attention_cpu)
# The DAMSM similarity: autograd of the float32 reference, ~1.7x the torch backend's recomputing
# backward on the demo's shape (16 captions x 64 regions x 18 words, forward + backward, 1 core).
CPU.register(DAMSM_SIMILARITY, supports=cpu_only, composite=damsm_word_similarity_cpu)
