"""``batch_norm_glu`` and ``batch_norm_add``: BatchNorm fused with what follows it in G.

    batch_norm_glu(x, ...) == glu(batch_norm(x, ...), dim=1)      (upBlock, ResBlock, INIT_STAGE_G)
    batch_norm_add(x, residual, ...) == batch_norm(x, ...) + residual      (end of ResBlock)

x is B x C (BatchNorm1d) or B x C x H x W (NCHW-contiguous or channels-last); statistics are per
channel over every other dimension, accumulated in float32. In training mode the running
statistics are updated in place exactly as ``F.batch_norm`` does (unbiased variance, momentum).

Both public ops share one op of the registry, ``batch_norm_act`` (mode ``"glu"`` or ``"add"``),
defined here with two backends: ``reference`` (``F.batch_norm`` then ``F.glu`` or ``+``,
differentiated by autograd; it updates the running statistics itself) and ``torch`` (closed-form
kernels). The kernel form is functional: it returns the batch mean and biased variance, and the
wrappers here update the running statistics. The kernels' contract:

* ``forward(x, residual | None, weight | None, bias | None, running_mean | None, running_var |
  None, training, eps, mode) -> (y, mean C, var C)``: mean and biased var of the batch (float32;
  float64 for float64 x) in training mode, empty tensors in eval mode.
* ``backward(grad_y, x, weight | None, bias | None, mean, var, training, eps, mode)
  -> (grad_x, grad_weight | None, grad_bias | None)`` with ``mean``/``var`` the statistics the
  forward normalised with (the batch's in training, the running ones in eval). The residual's
  gradient is ``grad_y`` itself and never reaches the backend.

The composite form takes ``(x, residual | None, weight, bias, running_mean, running_var,
training, momentum, eps, mode)`` and returns y, the running statistics updated in place.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from attngan_fast.ops import _checks, _layout, registry

OP = "batch_norm_act"
MODES = ("glu", "add")


def batch_norm_glu_reference(
    x: Tensor,
    weight: Tensor | None,
    bias: Tensor | None,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    training: bool,
    momentum: float,
    eps: float,
) -> Tensor:
    """Pure-PyTorch BatchNorm + GLU (the oracle and compile baseline)."""
    y = _f_batch_norm(x, running_mean, running_var, weight, bias, training, momentum, eps)
    return F.glu(y, dim=1)


def batch_norm_add_reference(
    x: Tensor,
    residual: Tensor,
    weight: Tensor | None,
    bias: Tensor | None,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    training: bool,
    momentum: float,
    eps: float,
) -> Tensor:
    """Pure-PyTorch BatchNorm + residual add (the oracle and compile baseline)."""
    y = _f_batch_norm(x, running_mean, running_var, weight, bias, training, momentum, eps)
    return y + residual


def _f_batch_norm(
    x: Tensor,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    weight: Tensor | None,
    bias: Tensor | None,
    training: bool,
    momentum: float,
    eps: float,
) -> Tensor:
    """``F.batch_norm`` for parameters of any float dtype, as the ops take them: F.batch_norm
    takes float32 parameters with half / bfloat16 x, otherwise only x's dtype, so others are cast
    to x's (the running statistics still updated in place, in their own dtype)."""

    def cast(t: Tensor | None) -> Tensor | None:
        if t is None or (x.dtype in (torch.float16, torch.bfloat16) and t.dtype == torch.float32):
            return t
        return t.to(x.dtype)

    rm, rv = cast(running_mean), cast(running_var)
    y = F.batch_norm(x, rm, rv, cast(weight), cast(bias), training, momentum, eps)
    if training and running_mean is not None and rm is not running_mean:
        with torch.no_grad():
            running_mean.copy_(rm)
            running_var.copy_(rv)
    return y


def _reduce_dims(x: Tensor) -> list[int]:
    return [0, *range(2, x.dim())]


def _per_channel(t: Tensor, x: Tensor) -> Tensor:
    return t.reshape(1, -1, *([1] * (x.dim() - 2)))


# --- torch backend: the kernels' contract in PyTorch ----------------------------------------


def _normalise(x: Tensor, mean: Tensor, var: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    invstd = torch.rsqrt(var + eps)
    return (x - _per_channel(mean, x)) * _per_channel(invstd, x), invstd


def _affine(xhat: Tensor, weight: Tensor | None, bias: Tensor | None) -> Tensor:
    z = xhat if weight is None else xhat * _per_channel(weight.to(xhat.dtype), xhat)
    return z if bias is None else z + _per_channel(bias.to(xhat.dtype), xhat)


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
    acc = _checks.acc_dtype(x.dtype)
    xf = x.to(acc)
    if training:
        var, mean = torch.var_mean(xf, dim=_reduce_dims(x), unbiased=False)
    else:
        mean, var = running_mean.to(acc), running_var.to(acc)
    z = _affine(_normalise(xf, mean, var, eps)[0], weight, bias)
    y = F.glu(z, dim=1) if mode == "glu" else z + residual.to(acc)
    y = y.to(x.dtype).contiguous(memory_format=_layout.memory_format(x))
    if not training:
        mean, var = x.new_empty(0, dtype=acc), x.new_empty(0, dtype=acc)
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
    acc = _checks.acc_dtype(x.dtype)
    dims = _reduce_dims(x)
    g = grad_y.to(acc)
    xhat, invstd = _normalise(x.to(acc), mean.to(acc), var.to(acc), eps)
    if mode == "glu":
        z = _affine(xhat, weight, bias)
        half = z.shape[1] // 2
        gate = torch.sigmoid(z[:, half:])
        dz = torch.cat([g * gate, g * z[:, :half] * gate * (1 - gate)], dim=1)
    else:
        dz = g
    grad_weight = (dz * xhat).sum(dims).to(weight.dtype) if weight is not None else None
    grad_bias = dz.sum(dims).to(bias.dtype) if bias is not None else None
    dxhat = dz if weight is None else dz * _per_channel(weight.to(acc), x)
    if training:
        dxhat = (
            dxhat - dxhat.mean(dims, keepdim=True) - xhat * (dxhat * xhat).mean(dims, keepdim=True)
        )
    grad_x = (dxhat * _per_channel(invstd, x)).to(x.dtype)
    return grad_x.contiguous(memory_format=_layout.memory_format(x)), grad_weight, grad_bias


# --- the op and its registrations -----------------------------------------------------------


def _fake_forward(
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
    shape = list(x.shape)
    if mode == "glu":
        shape[1] //= 2
    y = x.new_empty(shape).contiguous(memory_format=_layout.memory_format(x))
    acc = _checks.acc_dtype(x.dtype)
    n_stats = x.shape[1] if training else 0
    return y, x.new_empty(n_stats, dtype=acc), x.new_empty(n_stats, dtype=acc)


def _fake_backward(
    grad_y: Tensor,
    x: Tensor,
    weight: Tensor | None,
    bias: Tensor | None,
    mean: Tensor,
    var: Tensor,
    training: bool,
    eps: float,
    mode: str,
) -> tuple[Tensor, Tensor, Tensor]:
    grad_x = torch.empty_like(x)
    grad_weight = torch.empty_like(weight) if weight is not None else x.new_empty(0)
    grad_bias = torch.empty_like(bias) if bias is not None else x.new_empty(0)
    return grad_x, grad_weight, grad_bias


def backward_without_none(backward):
    """A kernel backward as its custom op returns it: custom ops cannot return None, so an
    absent weight or bias gradient travels as an empty tensor (the autograd formula drops it)."""

    def run(grad_y, x, weight, bias, mean, var, training, eps, mode):
        grad_x, grad_weight, grad_bias = backward(
            grad_y, x, weight, bias, mean, var, training, eps, mode
        )
        empty = x.new_empty(0)
        return (
            grad_x,
            grad_weight if grad_weight is not None else empty,
            grad_bias if grad_bias is not None else empty.clone(),
        )

    return run


def _setup_context(ctx, inputs, output):
    x, residual, weight, bias, running_mean, running_var, training, eps, mode = inputs
    mean, var = (output[1], output[2]) if training else (running_mean, running_var)
    ctx.save_for_backward(x, weight, bias, mean, var)
    ctx.training, ctx.eps, ctx.mode = training, eps, mode
    ctx.mark_non_differentiable(output[1], output[2])


def _backward(impl, ctx, grad_y, _grad_mean, _grad_var):
    x, weight, bias, mean, var = ctx.saved_tensors
    needs = ctx.needs_input_grad
    grad_x = grad_weight = grad_bias = None
    if needs[0] or needs[2] or needs[3]:
        grad_x, grad_weight, grad_bias = impl.backward_op(
            _layout.dense(grad_y), x, weight, bias, mean, var, ctx.training, ctx.eps, ctx.mode
        )
    grad_residual = grad_y if needs[1] else None
    return (
        grad_x if needs[0] else None,
        grad_residual,
        grad_weight if needs[2] else None,
        grad_bias if needs[3] else None,
        None, None, None, None, None,
    )  # fmt: skip


def _reference(x, residual, weight, bias, running_mean, running_var, training, momentum, eps, mode):
    if mode == "glu":
        return batch_norm_glu_reference(
            x, weight, bias, running_mean, running_var, training, momentum, eps
        )
    return batch_norm_add_reference(
        x, residual, weight, bias, running_mean, running_var, training, momentum, eps
    )


registry.define_op(
    OP, _fake_forward, _fake_backward, _setup_context, _backward, reference=_reference
)
registry.TORCH.register(OP, batch_norm_act_forward, backward_without_none(batch_norm_act_backward))


# --- public ops -------------------------------------------------------------------------------


def check_bn_params(
    channels: int,
    values_per_channel: int,
    weight: Tensor | None,
    bias: Tensor | None,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    training: bool,
) -> None:
    """The BatchNorm parameters of an input of ``channels`` channels (``values_per_channel``
    values each): C-vectors or None, running statistics both or neither (needed in eval mode)."""
    for name, t in (
        ("weight", weight),
        ("bias", bias),
        ("running_mean", running_mean),
        ("running_var", running_var),
    ):
        if t is not None:
            _checks.check_float(name, t, f"C = {channels}", 1)
            _checks.check_size(name, t, 0, channels, f"C = {channels} (channels of x)")
    if (running_mean is None) != (running_var is None):
        raise ValueError("running_mean and running_var must both be tensors or both be None")
    if not training and running_mean is None:
        raise ValueError("eval mode (training=False) needs running_mean and running_var")
    if training and values_per_channel < 2:
        raise ValueError(
            f"training mode needs more than 1 value per channel, got {values_per_channel}"
        )


def _check_inputs(
    x: Tensor,
    residual: Tensor | None,
    weight: Tensor | None,
    bias: Tensor | None,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    training: bool,
    mode: str,
) -> None:
    shape = "B x C or B x C x H x W"
    _checks.check_float("x", x, shape, (2, 3, 4))
    _checks.check_nonempty("x", x, shape)
    channels = x.shape[1]
    if mode == "glu" and channels % 2:
        raise ValueError(f"x must have an even number of channels for GLU, got {channels}")
    if residual is not None:
        _checks.check_float("residual", residual, "the shape of x", x.dim())
        if residual.shape != x.shape:
            raise ValueError(
                f"residual must have the shape of x {tuple(x.shape)}, got {tuple(residual.shape)}"
            )
        _checks.check_same_dtype(("x", x), ("residual", residual))
    per_channel = x.numel() // channels
    check_bn_params(channels, per_channel, weight, bias, running_mean, running_var, training)
    _checks.check_same_device(
        ("x", x),
        ("residual", residual),
        ("weight", weight),
        ("bias", bias),
        ("running_mean", running_mean),
        ("running_var", running_var),
    )


def update_running_stats(
    running_mean: Tensor, running_var: Tensor, mean: Tensor, var: Tensor, n: int, momentum: float
) -> None:
    """Exactly ``F.batch_norm``'s update from the batch mean and biased variance of n values per
    channel: unbiased variance, momentum (in place, no autograd)."""
    with torch.no_grad():
        running_mean.mul_(1 - momentum).add_(mean.to(running_mean.dtype), alpha=momentum)
        unbiased = var * (n / (n - 1))
        running_var.mul_(1 - momentum).add_(unbiased.to(running_var.dtype), alpha=momentum)


def _batch_norm_act(
    x: Tensor,
    residual: Tensor | None,
    weight: Tensor | None,
    bias: Tensor | None,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    training: bool,
    momentum: float,
    eps: float,
    mode: str,
    backend: str | None,
) -> Tensor:
    _check_inputs(x, residual, weight, bias, running_mean, running_var, training, mode)
    call = registry.Call(x.device, x.dtype, {"x": tuple(x.shape)})
    impl = registry.choose(OP, call, backend)
    if impl.composite is not None:
        return impl.composite(
            x, residual, weight, bias, running_mean, running_var, training, momentum, eps, mode
        )
    y, mean, var = impl.forward_op(
        _layout.dense(x),
        None if residual is None else residual.contiguous(memory_format=_layout.memory_format(x)),
        weight,
        bias,
        running_mean,
        running_var,
        training,
        eps,
        mode,
    )
    if training and running_mean is not None:
        n = x.numel() // x.shape[1]
        update_running_stats(running_mean, running_var, mean, var, n, momentum)
    return y


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
    """``glu(batch_norm(x, ...), dim=1)``: x B x 2C [x H x W] -> B x C [x H x W].

    weight, bias, running_mean, running_var: 2C each (float32 also for half/bfloat16 x).
    Running statistics are updated in place in training mode, as ``F.batch_norm`` does.
    """
    return _batch_norm_act(
        x, None, weight, bias, running_mean, running_var, training, momentum, eps, "glu", backend
    )


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
    """``batch_norm(x, ...) + residual``: x and residual B x C [x H x W] -> B x C [x H x W]."""
    if not isinstance(residual, Tensor):
        raise TypeError(
            f"residual must be a tensor of the shape of x, got {type(residual).__name__}"
        )
    return _batch_norm_act(
        x,
        residual,
        weight,
        bias,
        running_mean,
        running_var,
        training,
        momentum,
        eps,
        "add",
        backend,
    )
