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

The op is defined here with two backends: ``reference`` (the two ops' references composed,
differentiated by autograd) and ``torch`` (the two ops' torch kernels one after the other). The
kernels' contract (one function; the backward reuses those of the two ops):

* ``forward(x, conv_weight, weight | None, bias | None, running_mean | None, running_var | None,
  training, eps) -> (y, conv_out B x 2C x 2H x 2W, mean 2C, var 2C)``: mean and biased var of
  conv_out in training mode, empty tensors in eval mode (as ``batch_norm_act``'s). conv_out is
  kept for the backward.
* backward: ``batch_norm_act``'s backward (GLU mode) then ``upsample_conv3x3``'s, of the same
  backend, through their custom ops: a backend registers the two ops' kernels with this one's.
"""

from __future__ import annotations

from torch import Tensor

from attngan_fast.ops import _checks, _layout, batch_norm, registry, upsample_conv

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
    conv_forward,
    bn_forward,
    x: Tensor,
    conv_weight: Tensor,
    weight: Tensor | None,
    bias: Tensor | None,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    training: bool,
    eps: float,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The forward contract from one backend's ``upsample_conv3x3`` and ``batch_norm_act``
    forward kernels (BatchNorm computes its own statistics)."""
    conv_out = conv_forward(x, conv_weight)
    y, mean, var = bn_forward(
        conv_out, None, weight, bias, running_mean, running_var, training, eps, "glu"
    )
    return y, conv_out, mean, var


# --- torch backend: the kernels' contract in PyTorch ----------------------------------------


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
        upsample_conv.upsample_conv3x3_forward, batch_norm.batch_norm_act_forward, x,
        conv_weight, weight, bias, running_mean, running_var, training, eps,
    )  # fmt: skip


# --- the op and its registrations -----------------------------------------------------------


def _fake_forward(
    x: Tensor,
    conv_weight: Tensor,
    weight: Tensor | None,
    bias: Tensor | None,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    training: bool,
    eps: float,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    b, _, h, w = x.shape
    c2 = conv_weight.shape[0]
    fmt = _layout.memory_format(x)
    y = x.new_empty(b, c2 // 2, 2 * h, 2 * w).contiguous(memory_format=fmt)
    conv_out = x.new_empty(b, c2, 2 * h, 2 * w).contiguous(memory_format=fmt)
    acc = _checks.acc_dtype(x.dtype)
    n_stats = c2 if training else 0
    return y, conv_out, x.new_empty(n_stats, dtype=acc), x.new_empty(n_stats, dtype=acc)


def _setup_context(ctx, inputs, output):
    x, conv_weight, weight, bias, running_mean, running_var, training, eps = inputs
    _, conv_out, mean, var = output
    if not training:
        mean, var = running_mean, running_var
    ctx.save_for_backward(x, conv_weight, conv_out, weight, bias, mean, var)
    ctx.training, ctx.eps = training, eps
    ctx.mark_non_differentiable(*output[1:])


def _backward(impl, ctx, grad_y, _grad_conv_out, _grad_mean, _grad_var):
    x, conv_weight, conv_out, weight, bias, mean, var = ctx.saved_tensors
    need_x, need_cw, need_w, need_b = ctx.needs_input_grad[:4]
    grad_x = grad_cw = grad_w = grad_b = None
    if any((need_x, need_cw, need_w, need_b)):
        bn = registry.implementation(batch_norm.OP, impl.backend)
        grad_conv, grad_w, grad_b = bn.backward_op(
            _layout.dense(grad_y), conv_out, weight, bias, mean, var, ctx.training, ctx.eps, "glu"
        )
    if need_x or need_cw:
        conv = registry.implementation(upsample_conv.OP, impl.backend)
        grad_x, grad_cw = conv.backward_op(grad_conv, x, conv_weight, need_x, need_cw)
    return (
        grad_x if need_x else None,
        grad_cw if need_cw else None,
        grad_w if need_w else None,
        grad_b if need_b else None,
        None, None, None, None,
    )  # fmt: skip


# no backward kernel of its own: the backward runs the two ops' backward kernels
registry.define_op(
    OP, _fake_forward, None, _setup_context, _backward, reference=upsample_conv3x3_bn_glu_reference
)
registry.TORCH.register(OP, upsample_conv3x3_bn_glu_forward)


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
        backend: a registered backend (``"torch"``, ``"triton"``, ``"reference"``, ...),
            ``"auto"``, or None (``use_backend``, ``ATTNGAN_FAST_BACKEND``, else automatic).

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
    call = registry.Call(
        x.device, x.dtype, {"x": tuple(x.shape), "conv_weight": tuple(conv_weight.shape)}
    )
    impl = registry.choose(OP, call, backend)
    if impl.composite is not None:
        return impl.composite(
            x, conv_weight, weight, bias, running_mean, running_var, training, momentum, eps
        )
    y, _, mean, var = impl.forward_op(
        _layout.dense(x),
        conv_weight.contiguous(),
        weight,
        bias,
        running_mean,
        running_var,
        training,
        eps,
    )
    if training and running_mean is not None:
        batch_norm.update_running_stats(running_mean, running_var, mean, var, per_channel, momentum)
    return y
