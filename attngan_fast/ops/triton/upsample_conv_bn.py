"""Triton backend of ``upsample_conv3x3_bn_glu``: BatchNorm statistics from the conv's epilogue.

Training forward, three launches and one read of the conv output (instead of two):

1. the four-phase conv kernel (``upsample_conv._forward_kernel`` with STATS) writes the conv
   output and, per output tile of BLOCK_M pixels x BLOCK_N channels, the tile's per-channel
   (mean, M2, count), computed in registers from the values as stored: 3 x SPLIT x 2C float32
   partials, SPLIT = 4 phases x pixel tiles;
2. ``batch_norm.merge_partials`` reduces them to the batch mean and biased variance;
3. ``batch_norm.apply`` normalises, applies the affine and the GLU.

Eval mode, float64 inputs and the huge tensors the kernels do not take run the two ops' Triton
backends one after the other (``composed_forward``).
"""

from __future__ import annotations

from torch import Tensor

from attngan_fast.ops import upsample_conv_bn as op
from attngan_fast.ops.triton import batch_norm, upsample_conv
from attngan_fast.ops.triton._common import TRITON, launches_on_input_device


def uses_epilogue_stats(x: Tensor, conv_weight: Tensor, training: bool) -> bool:
    """True when the statistics come from the conv epilogue (training, and the Triton conv kernel
    applies, which bounds the conv output below 2**31 elements as the BatchNorm kernels need),
    False when the two ops run one after the other."""
    return training and upsample_conv.uses_triton_kernels(x, conv_weight)


@launches_on_input_device
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
    if not uses_epilogue_stats(x, conv_weight, training):
        return op.composed_forward(
            upsample_conv.upsample_conv3x3_forward, batch_norm.batch_norm_act_forward, x,
            conv_weight, weight, bias, running_mean, running_var, training, eps,
        )  # fmt: skip
    weight, bias = (None if t is None else t.contiguous() for t in (weight, bias))
    conv_out, part = upsample_conv.upsample_conv3x3_forward_stats(x, conv_weight)
    mean, var = batch_norm.merge_partials(part)
    y = batch_norm.apply(conv_out, None, weight, bias, mean, var, eps, "glu")
    return y, conv_out, mean, var


# the backward runs the two ops' triton kernels
TRITON.register(op.OP, upsample_conv3x3_bn_glu_forward, supports=upsample_conv.supports)
