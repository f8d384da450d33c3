"""``upsample_conv3x3``: nearest x2 upsampling followed by a 3x3 convolution (G's upBlock).

    upsample_conv3x3(x, weight) == conv2d(interpolate(x, scale_factor=2, mode="nearest"),
                                          weight, padding=1)

Shapes: x B x Cin x H x W (NCHW-contiguous or channels-last), weight Cout x Cin x 3 x 3 -> output
B x Cout x 2H x 2W in x's memory format. The fast backends use the four-phase decomposition (each
output phase is a 2x2 convolution at the input resolution; no upsampled tensor).

This module defines the op with two backends: ``reference`` (``upsample_conv3x3_reference``,
differentiated by autograd) and ``torch`` (the same forward, ``convolution_backward`` of the
upsampled tensor, as kernels). The kernels' contract:

* ``forward(x, weight) -> y``
* ``backward(grad_y, x, weight, need_x, need_weight) -> (grad_x | None, grad_weight | None)``
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from attngan_fast.ops import _checks, _layout, registry

OP = "upsample_conv3x3"


def upsample_conv3x3_reference(x: Tensor, weight: Tensor) -> Tensor:
    """Pure-PyTorch upsample + conv (autograd-differentiable; the oracle and compile baseline)."""
    return F.conv2d(F.interpolate(x, scale_factor=2, mode="nearest"), weight, padding=1)


def fold_upsampled_grad(grad_up: Tensor) -> Tensor:
    """Adjoint of nearest x2 upsampling: B x C x 2H x 2W -> B x C x H x W (sums of 2x2 blocks)."""
    b, c, h2, w2 = grad_up.shape
    return grad_up.reshape(b, c, h2 // 2, 2, w2 // 2, 2).sum(dim=(3, 5))


# --- torch backend: the kernels' contract in PyTorch ----------------------------------------


def upsample_conv3x3_forward(x: Tensor, weight: Tensor) -> Tensor:
    return upsample_conv3x3_reference(x, weight).contiguous(memory_format=_layout.memory_format(x))


def upsample_conv3x3_backward(
    grad_y: Tensor, x: Tensor, weight: Tensor, need_x: bool, need_weight: bool
) -> tuple[Tensor | None, Tensor | None]:
    x_up = F.interpolate(x, scale_factor=2, mode="nearest")
    grad_up, grad_weight, _ = torch.ops.aten.convolution_backward(
        grad_y, x_up, weight, None, [1, 1], [1, 1], [1, 1], False, [0, 0], 1,
        [need_x, need_weight, False],
    )  # fmt: skip
    grad_x = fold_upsampled_grad(grad_up) if need_x else None
    if grad_x is not None:
        grad_x = grad_x.contiguous(memory_format=_layout.memory_format(x))
    return grad_x, grad_weight


# --- the op and its registrations -----------------------------------------------------------


def _fake_forward(x: Tensor, weight: Tensor) -> Tensor:
    b, _, h, w = x.shape
    out = x.new_empty(b, weight.shape[0], 2 * h, 2 * w)
    return out.contiguous(memory_format=_layout.memory_format(x))


def _fake_backward(
    grad_y: Tensor, x: Tensor, weight: Tensor, need_x: bool, need_weight: bool
) -> tuple[Tensor, Tensor]:
    grad_x = torch.empty_like(x) if need_x else x.new_empty(0)
    return grad_x, (torch.empty_like(weight) if need_weight else weight.new_empty(0))


def backward_without_none(backward):
    """A kernel backward as its custom op returns it: custom ops cannot return None, so an
    unneeded gradient travels as an empty tensor (the autograd formula drops it)."""

    def run(grad_y, x, weight, need_x, need_weight):
        grad_x, grad_weight = backward(grad_y, x, weight, need_x, need_weight)
        return (
            grad_x if grad_x is not None else x.new_empty(0),
            grad_weight if grad_weight is not None else weight.new_empty(0),
        )

    return run


def _setup_context(ctx, inputs, output):
    ctx.save_for_backward(*inputs)


def _backward(impl, ctx, grad_y):
    x, weight = ctx.saved_tensors
    need_x, need_weight = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
    grad_x, grad_weight = impl.backward_op(_layout.dense(grad_y), x, weight, need_x, need_weight)
    return (grad_x if need_x else None), (grad_weight if need_weight else None)


registry.define_op(
    OP,
    _fake_forward,
    _fake_backward,
    _setup_context,
    _backward,
    reference=upsample_conv3x3_reference,
)
registry.TORCH.register(
    OP, upsample_conv3x3_forward, backward_without_none(upsample_conv3x3_backward)
)


# --- public op --------------------------------------------------------------------------------


def prepare_inputs(x: Tensor, weight: Tensor) -> tuple[Tensor, Tensor]:
    """Check x (B x Cin x H x W) and weight (Cout x Cin x 3 x 3), cast both to the autocast dtype
    when autocast is on; returns (x, weight)."""
    _checks.check_float("x", x, "B x Cin x H x W", 4)
    _checks.check_float("weight", weight, "Cout x Cin x 3 x 3", 4)
    if tuple(weight.shape[1:]) != (x.shape[1], 3, 3):
        raise ValueError(
            f"weight must have shape Cout x Cin x 3 x 3 with Cin = {x.shape[1]} (channels of x), "
            f"got {tuple(weight.shape)}"
        )
    _checks.check_nonempty("x", x, "B x Cin x H x W")
    _checks.check_nonempty("weight", weight, "Cout x Cin x 3 x 3")
    _checks.check_same_device(("x", x), ("weight", weight))
    cast = _checks.autocast_dtype(x.device.type)
    if cast is not None:
        x, weight = x.to(cast), weight.to(cast)
    _checks.check_same_dtype(("x", x), ("weight", weight))
    return x, weight


def upsample_conv3x3(x: Tensor, weight: Tensor, *, backend: str | None = None) -> Tensor:
    """Nearest x2 upsample then 3x3 convolution (padding 1, no bias): B x Cout x 2H x 2W.

    Args:
        x: B x Cin x H x W, NCHW-contiguous or channels-last.
        weight: Cout x Cin x 3 x 3.
        backend: a registered backend (``"torch"``, ``"triton"``, ``"reference"``, ...),
            ``"auto"``, or None (``use_backend``, ``ATTNGAN_FAST_BACKEND``, else automatic).
    """
    x, weight = prepare_inputs(x, weight)
    call = registry.Call(x.device, x.dtype, {"x": tuple(x.shape), "weight": tuple(weight.shape)})
    impl = registry.choose(OP, call, backend)
    if impl.composite is not None:
        return impl.composite(x, weight)
    return impl.forward_op(_layout.dense(x), weight.contiguous())
