"""Run an ``nn.BatchNorm*`` module's parameters through a fused op exactly as its forward would.

``nn.BatchNorm*.forward`` bumps ``num_batches_tracked`` in training mode, turns ``momentum=None``
into a cumulative average (factor 1 / num_batches_tracked) and picks batch or running statistics;
``bn_glu``, ``bn_add`` and ``upconv_bn_glu`` do the same bookkeeping, then call
``ops.batch_norm_glu`` / ``ops.batch_norm_add`` / ``ops.upsample_conv3x3_bn_glu``, so running
statistics evolve exactly as with the plain module.
"""

from __future__ import annotations

from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from attngan_fast import ops


def _call_args(bn: _BatchNorm) -> tuple[Tensor | None, Tensor | None, bool, float, float]:
    """(running_mean, running_var, use_batch_stats, momentum, eps) as ``_BatchNorm.forward``."""
    momentum = 0.0 if bn.momentum is None else bn.momentum
    if bn.training and bn.track_running_stats and bn.num_batches_tracked is not None:
        bn.num_batches_tracked.add_(1)
        if bn.momentum is None:
            momentum = 1.0 / float(bn.num_batches_tracked)
    use_batch_stats = bn.training or (bn.running_mean is None and bn.running_var is None)
    keep_running = not bn.training or bn.track_running_stats
    running_mean = bn.running_mean if keep_running else None
    running_var = bn.running_var if keep_running else None
    return running_mean, running_var, use_batch_stats, momentum, bn.eps


def bn_glu(x: Tensor, bn: _BatchNorm) -> Tensor:
    """``GLU(bn(x))``: x B x 2C [x H x W] -> B x C [x H x W], through ``ops.batch_norm_glu``."""
    mean, var, training, momentum, eps = _call_args(bn)
    return ops.batch_norm_glu(x, bn.weight, bn.bias, mean, var, training, momentum, eps)


def bn_add(x: Tensor, residual: Tensor, bn: _BatchNorm) -> Tensor:
    """``bn(x) + residual``: B x C [x H x W], through ``ops.batch_norm_add``."""
    mean, var, training, momentum, eps = _call_args(bn)
    return ops.batch_norm_add(x, residual, bn.weight, bn.bias, mean, var, training, momentum, eps)


def upconv_bn_glu(x: Tensor, conv: nn.Conv2d, bn: _BatchNorm) -> Tensor:
    """``GLU(bn(conv(upsample2(x))))``: B x Cin x H x W -> B x C x 2H x 2W (conv: 2C outputs,
    3x3, no bias), through ``ops.upsample_conv3x3_bn_glu``."""
    mean, var, training, momentum, eps = _call_args(bn)
    return ops.upsample_conv3x3_bn_glu(
        x, conv.weight, bn.weight, bn.bias, mean, var, training, momentum, eps
    )
