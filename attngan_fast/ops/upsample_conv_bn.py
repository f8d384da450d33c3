"""``upsample_conv3x3_bn_glu``: G's whole upBlock (nearest x2 -> conv3x3 -> BatchNorm -> GLU).

    upsample_conv3x3_bn_glu(x, conv_weight, weight, bias, running_mean, running_var, training,
                            momentum, eps)
        == batch_norm_glu(upsample_conv3x3(x, conv_weight), weight, bias, running_mean,
                          running_var, training, momentum, eps)

Shapes: x B x Cin x H x W (NCHW-contiguous or channels-last), conv_weight 2C x Cin x 3 x 3,
weight / bias / running_mean / running_var 2C -> B x C x 2H x 2W in x's memory format.

Why one op: in training mode BatchNorm must know the batch statistics of the conv output before
it can normalise it, which costs a full extra read of that tensor (the largest of the block: 2C
channels at the output resolution). The ``triton`` backend computes the statistics in the conv
kernel's epilogue instead, per output tile while the tile is still in registers, and merges the
per-tile partials; BatchNorm then reads the conv output once, to normalise it and apply the GLU.

Backend contract (one function; the backward reuses the two ops' backward functions):

* ``upsample_conv3x3_bn_glu_forward(x, conv_weight, weight | None, bias | None, running_mean |
  None, running_var | None, training, eps) -> (y, conv_out B x 2C x 2H x 2W, mean 2C, var 2C)``:
  mean and biased var of conv_out in training mode, empty tensors in eval mode (as
  ``batch_norm_act_forward``). conv_out is kept for the backward.
* backward: ``batch_norm_act_backward`` (GLU mode) then ``upsample_conv3x3_backward`` of the same
  backend, through their registered ops.
"""

from __future__ import annotations

import torch
from torch import Tensor

from attngan_fast.ops import _backend, _checks, _layout, batch_norm, upsample_conv

OP = "upsample_conv3x3_bn_glu"


def upsample_conv3x3_bn_glu_reference(
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
    """Pure-PyTorch upBlock: upsample + conv, then BatchNorm + GLU (oracle and compile baseline)."""
    conv_out = upsample_conv.upsample_conv3x3_reference(x, conv_weight)
    return batch_norm.batch_norm_glu_reference(
        conv_out, weight, bias, running_mean, running_var, training, momentum, eps
    )


def composed_forward(
    conv_impl,
    bn_impl,
    x: Tensor,
    conv_weight: Tensor,
    weight: Tensor | None,
    bias: Tensor | None,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    training: bool,
    eps: float,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The forward contract from two backend modules' ``upsample_conv3x3_forward`` and
    ``batch_norm_act_forward`` (BatchNorm computes its own statistics)."""
    conv_out = conv_impl.upsample_conv3x3_forward(x, conv_weight)
    y, mean, var = bn_impl.batch_norm_act_forward(
        conv_out, None, weight, bias, running_mean, running_var, training, eps, "glu"
    )
    return y, conv_out, mean, var


# --- torch backend ----------------------------------------------------------------------------


def upsample_conv3x3_bn_glu_supported(device: torch.device) -> str | None:
    return None


def upsample_conv3x3_bn_glu_forward(
    x: Tensor,
    conv_weight: Tensor,
    weight: Tensor | None,
    bias: Tensor | None,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    training: bool,
    eps: float,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    return composed_forward(
        upsample_conv, batch_norm, x, conv_weight, weight, bias, running_mean, running_var,
        training, eps,
    )  # fmt: skip


# --- registration -----------------------------------------------------------------------------


@torch.library.custom_op("attngan_fast::upsample_conv3x3_bn_glu", mutates_args=())
def _upsample_conv3x3_bn_glu_op(
    x: Tensor,
    conv_weight: Tensor,
    weight: Tensor | None,
    bias: Tensor | None,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    training: bool,
    eps: float,
    backend: str,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    impl = _backend.implementation(OP, backend)
    return impl.upsample_conv3x3_bn_glu_forward(
        x, conv_weight, weight, bias, running_mean, running_var, training, eps
    )


@_upsample_conv3x3_bn_glu_op.register_fake
def _(x, conv_weight, weight, bias, running_mean, running_var, training, eps, backend):
    b, _, h, w = x.shape
    c2 = conv_weight.shape[0]
    fmt = _layout.memory_format(x)
    y = x.new_empty(b, c2 // 2, 2 * h, 2 * w).contiguous(memory_format=fmt)
    conv_out = x.new_empty(b, c2, 2 * h, 2 * w).contiguous(memory_format=fmt)
    acc = _checks.acc_dtype(x.dtype)
    n_stats = c2 if training else 0
    return y, conv_out, x.new_empty(n_stats, dtype=acc), x.new_empty(n_stats, dtype=acc)


def _setup_context(ctx, inputs, output):
    x, conv_weight, weight, bias, running_mean, running_var, training, eps, backend = inputs
    _, conv_out, mean, var = output
    if not training:
        mean, var = running_mean, running_var
    ctx.save_for_backward(x, conv_weight, conv_out, weight, bias, mean, var)
    ctx.training, ctx.eps, ctx.backend = training, eps, backend
    ctx.mark_non_differentiable(*output[1:])


def _backward(ctx, grad_y, _grad_conv_out, _grad_mean, _grad_var):
    x, conv_weight, conv_out, weight, bias, mean, var = ctx.saved_tensors
    need_x, need_cw, need_w, need_b = ctx.needs_input_grad[:4]
    grad_x = grad_cw = grad_w = grad_b = None
    if any((need_x, need_cw, need_w, need_b)):
        grad_conv, grad_w, grad_b = batch_norm._batch_norm_act_backward_op(
            _layout.dense(grad_y), conv_out, weight, bias, mean, var, ctx.training, ctx.eps,
            "glu", ctx.backend,
        )  # fmt: skip
    if need_x or need_cw:
        grad_x, grad_cw = upsample_conv._upsample_conv3x3_backward_op(
            grad_conv, x, conv_weight, need_x, need_cw, ctx.backend
        )
    return (
        grad_x if need_x else None,
        grad_cw if need_cw else None,
        grad_w if need_w else None,
        grad_b if need_b else None,
        None, None, None, None, None,
    )  # fmt: skip


_upsample_conv3x3_bn_glu_op.register_autograd(_backward, setup_context=_setup_context)


# --- public op --------------------------------------------------------------------------------


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
    """G's upBlock: ``glu(batch_norm(upsample_conv3x3(x, conv_weight), ...), dim=1)``.

    Args:
        x: B x Cin x H x W, NCHW-contiguous or channels-last.
        conv_weight: 2C x Cin x 3 x 3 (the conv has no bias).
        weight, bias, running_mean, running_var: 2C each (float32 also for half/bfloat16 x), or
            None; running statistics are updated in place in training mode, as ``F.batch_norm``.
        backend: ``"torch"``, ``"triton"`` or None (``ATTNGAN_FAST_BACKEND``, else automatic).

    Returns B x C x 2H x 2W in x's memory format. Under autocast, x and conv_weight are cast to
    the autocast dtype (as ``upsample_conv3x3`` does); the BatchNorm parameters stay as given.
    """
    x, conv_weight = upsample_conv.prepare_inputs(x, conv_weight)
    channels = conv_weight.shape[0]
    if channels % 2:
        raise ValueError(
            f"conv_weight must have an even number of output channels for GLU, got {channels}"
        )
    b, _, h, w = x.shape
    per_channel = b * 4 * h * w
    batch_norm.check_bn_params(
        channels, per_channel, weight, bias, running_mean, running_var, training
    )
    _checks.check_same_device(
        ("x", x),
        ("weight", weight),
        ("bias", bias),
        ("running_mean", running_mean),
        ("running_var", running_var),
    )
    name = _backend.resolve_backend(OP, backend, x.device)
    y, _, mean, var = _upsample_conv3x3_bn_glu_op(
        _layout.dense(x),
        conv_weight.contiguous(),
        weight,
        bias,
        running_mean,
        running_var,
        training,
        eps,
        name,
    )
    if training and running_mean is not None:
        batch_norm.update_running_stats(running_mean, running_var, mean, var, per_channel, momentum)
    return y
