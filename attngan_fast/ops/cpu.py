"""CPU implementations of the fused ops, on PyTorch's native CPU kernels (oneDNN / ATen).

On a CPU the fastest way to run G's BatchNorm + GLU / + residual is PyTorch's own batch-norm
kernels (one vectorised pass for the statistics, one to normalise, a fused backward), not the
``torch`` backend's closed-form formulas, which run a dozen elementwise passes in float32. The
convolutions are oneDNN's, fastest in channels-last and, on CPUs with native bf16 (AVX-512 BF16 /
AMX), in bfloat16. Measured on a 2-core Xeon (AVX-512 BF16 + AMX): ``benchmarks/NOTES.md``.

Two forms of each op live here, for the op registry to register:

* backend functions with the contract of the op's module (``batch_norm_act_forward`` /
  ``batch_norm_act_backward``, see ``attngan_fast/ops/batch_norm.py``), usable inside the
  registered custom op (``torch.compile``, ``opcheck``);
* functions with the public op's signature (``batch_norm_glu``, ``batch_norm_add``,
  ``upsample_conv3x3``, ``upsample_conv3x3_bn_glu``, ``word_attention``) that compose native ops
  and let autograd differentiate them: on the CPU this is the fastest path measured (autograd keeps
  the batch-norm output for the GLU's backward instead of recomputing it).

``cpu_ops()`` routes ``attngan_fast.ops``' public ops to the second form for the duration of a
block, until the registry makes them the automatic choice on CPU tensors.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor

from attngan_fast.ops import _checks

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


def batch_norm_act_supported(device: torch.device) -> str | None:
    return None if device.type == "cpu" else f"the cpu backend runs on CPU tensors (got {device})"


def _params(x: Tensor, weight: Tensor | None, bias: Tensor | None) -> tuple[Tensor, Tensor]:
    """Weight and bias as the native kernels want them: present, in the parameters' dtype."""
    acc = _checks.acc_dtype(x.dtype)
    channels = x.shape[1]
    w = weight if weight is not None else x.new_ones(channels, dtype=acc)
    b = bias if bias is not None else x.new_zeros(channels, dtype=acc)
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
    """``batch_norm_act_forward`` of the contract: native batch norm (statistics accumulated in
    float32 for low-precision x), then ``glu`` or ``+ residual``."""
    w, b = _params(x, weight, bias)
    acc = _checks.acc_dtype(x.dtype)
    if training:
        z, mean, invstd = torch.ops.aten._native_batch_norm_legit.no_stats(x, w, b, True, 0.0, eps)
        var = invstd.to(acc).pow(-2) - eps
        mean = mean.to(acc)
    else:
        z = torch.ops.aten._native_batch_norm_legit_no_training(
            x, w, b, running_mean, running_var, 0.0, eps
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
    output (one native pass), then the native batch-norm backward."""
    w, b = _params(x, weight, bias)
    acc = _checks.acc_dtype(x.dtype)
    mean, var = mean.to(acc), var.to(acc)
    invstd = torch.rsqrt(var + eps)
    if mode == "glu":
        z = torch.ops.aten._native_batch_norm_legit_no_training(x, w, b, mean, var, 0.0, eps)[0]
        if _is_channels_last(z):
            half = z.shape[1] // 2
            grad_z = glu_backward_halves(grad_y.to(x.dtype), z[:, :half], z[:, half:].sigmoid())
        else:
            grad_z = torch.ops.aten.glu_backward(grad_y.to(x.dtype), z, 1)
    else:
        grad_z = grad_y.to(x.dtype)
    need = [True, weight is not None, bias is not None]
    grad_x, grad_w, grad_b = torch.ops.aten.native_batch_norm_backward(
        grad_z, x, w, mean, var, mean, invstd, training, eps, need
    )
    return (
        grad_x,
        grad_w.to(weight.dtype) if weight is not None else None,
        grad_b.to(bias.dtype) if bias is not None else None,
    )


# --- public-signature functions (native ops under autograd) -----------------------------------


class _GLU(torch.autograd.Function):
    """``F.glu(z, dim=1)`` for channels-last z, whose backward is two elementwise passes written
    into the halves of one gradient tensor: ATen's ``glu_backward`` is several times slower on
    channels-last tensors (their halves are strided there) than on NCHW ones."""

    @staticmethod
    def forward(ctx, z: Tensor) -> Tensor:
        half = z.shape[1] // 2
        a, gate = z[:, :half], torch.sigmoid(z[:, half:])
        ctx.save_for_backward(a, gate)
        return a * gate

    @staticmethod
    def backward(ctx, grad_y: Tensor) -> Tensor:
        return glu_backward_halves(grad_y, *ctx.saved_tensors)


def _is_channels_last(t: Tensor) -> bool:
    return t.dim() == 4 and not t.is_contiguous() and t.is_contiguous(memory_format=_CL)


def glu_backward_halves(grad_y: Tensor, a: Tensor, gate: Tensor) -> Tensor:
    """Gradient of ``a * gate`` (gate = sigmoid(b)) w.r.t. cat([a, b], 1), channels-last: two
    elementwise passes, each writing its half of the result in place."""
    half = a.shape[1]
    grad_z = torch.empty(
        (a.shape[0], 2 * half, *a.shape[2:]), dtype=a.dtype, device=a.device
    ).contiguous(memory_format=_CL)
    grad_a = torch.mul(grad_y, gate, out=grad_z[:, :half])
    # d(a * sigmoid(b)) / db = grad_y * a * gate * (1 - gate) = grad_a * a * (1 - gate)
    torch.mul(grad_a * a, 1 - gate, out=grad_z[:, half:])
    return grad_z


def glu(z: Tensor) -> Tensor:
    """GLU over channels: B x 2C [x H x W] -> B x C [x H x W], fast backward in both layouts."""
    if _is_channels_last(z):
        return _GLU.apply(z)
    return F.glu(z, dim=1)


def batch_norm_glu(
    x: Tensor,
    weight: Tensor | None,
    bias: Tensor | None,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    training: bool,
    momentum: float,
    eps: float,
    *,
    backend: str | None = None,
) -> Tensor:
    """``glu(batch_norm(x, ...), dim=1)``: B x 2C [x H x W] -> B x C [x H x W] (native kernels)."""
    z = F.batch_norm(x, running_mean, running_var, weight, bias, training, momentum, eps)
    return glu(z)


def batch_norm_add(
    x: Tensor,
    residual: Tensor,
    weight: Tensor | None,
    bias: Tensor | None,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    training: bool,
    momentum: float,
    eps: float,
    *,
    backend: str | None = None,
) -> Tensor:
    """``batch_norm(x, ...) + residual``: B x C [x H x W] (native kernels)."""
    z = F.batch_norm(x, running_mean, running_var, weight, bias, training, momentum, eps)
    return z + residual.to(z.dtype)


def upsample_conv3x3(x: Tensor, weight: Tensor, *, backend: str | None = None) -> Tensor:
    """Nearest x2 upsample then oneDNN's 3x3 convolution: B x Cout x 2H x 2W.

    On the CPU the four-phase form (2x2 convolutions with 4 Cout outputs at the input
    resolution, then an interleave) does 16 / 36 of the multiply-adds but is 1.7x slower in
    channels-last (the fast path's layout) and 6x in bf16: oneDNN's 2x2 kernels with a padded
    output plus the interleave pass lose to its 3x3 kernel; only in fp32 NCHW is it 15 % faster
    (measured in ``benchmarks/NOTES.md``, "CPU path").
    """
    if torch.is_autocast_enabled("cpu"):
        dtype = torch.get_autocast_dtype("cpu")
        x, weight = x.to(dtype), weight.to(dtype)
    return F.conv2d(F.interpolate(x, scale_factor=2, mode="nearest"), weight, padding=1)


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
    *,
    backend: str | None = None,
) -> Tensor:
    """G's upBlock: nearest x2, 3x3 conv, BatchNorm, GLU: B x Cin x H x W -> B x C x 2H x 2W."""
    return batch_norm_glu(
        upsample_conv3x3(x, conv_weight), weight, bias, running_mean, running_var, training,
        momentum, eps,
    )  # fmt: skip


def word_attention(
    query: Tensor,
    source: Tensor,
    mask: Tensor | None,
    *,
    need_attn: bool = True,
    legacy_mask: bool = False,
    backend: str | None = None,
) -> tuple[Tensor, Tensor | None]:
    """Word attention with PyTorch's softmax (float32) under autograd: (B x C x N, B x T x N)."""
    from attngan_fast.ops.word_attention import word_attention_reference

    if torch.is_autocast_enabled("cpu"):
        dtype = torch.get_autocast_dtype("cpu")
        query, source = query.to(dtype), source.to(dtype)
    return word_attention_reference(query, source, mask, need_attn, legacy_mask)


PUBLIC = {
    "batch_norm_glu": batch_norm_glu,
    "batch_norm_add": batch_norm_add,
    "upsample_conv3x3": upsample_conv3x3,
    "upsample_conv3x3_bn_glu": upsample_conv3x3_bn_glu,
    "word_attention": word_attention,
}


@contextlib.contextmanager
def cpu_ops(names: tuple[str, ...] = tuple(PUBLIC)) -> Iterator[None]:
    """Within the block, ``attngan_fast.ops.<name>`` (what the models call) is this module's CPU
    function for each of ``names``. The models look the ops up at call time."""
    from attngan_fast import ops

    saved = {name: getattr(ops, name) for name in names}
    try:
        for name in names:
            setattr(ops, name, PUBLIC[name])
        yield
    finally:
        for name, fn in saved.items():
            setattr(ops, name, fn)
