"""Four-phase form of nearest x2 upsampling followed by a 3x3 convolution (padding 1, no bias).

Output pixel (2i + py, 2j + px) of ``conv3x3(upsample2(x))`` reads upsampled rows 2i + py - 1 ..
2i + py + 1, i.e. input rows i + py - 1 and i + py only (likewise for columns). So each output
phase (py, px) is a 2x2 convolution of x at the input resolution whose taps are sums of 3x3 taps:

    phase py = 0: tap a = 0 (row offset -1) <- w[0];          tap a = 1 (offset 0)  <- w[1] + w[2]
    phase py = 1: tap a = 0 (row offset  0) <- w[0] + w[1];   tap a = 1 (offset +1) <- w[2]

16 instead of 36 multiply-adds per input pixel and channel pair, and no upsampled tensor.

Layout of the phase weights: ``4 x Cout x Cin x 2 x 2`` indexed [2 py + px, co, ci, a, c], where
tap (a, c) reads input pixel (i + py - 1 + a, j + px - 1 + c).

This module holds the weight transform, its adjoint and "path (a)": the four phases as one
``F.conv2d`` with a 2x2 kernel and 4 Cout output channels (cuDNN on GPU), interleaved by
``pixel_shuffle``; the triton backend falls back to it where its own kernel does not apply.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from attngan_fast.ops import _layout


def _combine(weight: Tensor) -> Tensor:
    """R[p, a, k] = 1 if 3x3 tap k folds into 2x2 tap a of phase p (2 x 2 x 3, weight's dtype)."""
    r = torch.zeros(2, 2, 3, dtype=weight.dtype, device=weight.device)
    r[0, 0, 0] = r[0, 1, 1] = r[0, 1, 2] = 1
    r[1, 0, 0] = r[1, 0, 1] = r[1, 1, 2] = 1
    return r


def phase_weights(weight: Tensor) -> Tensor:
    """Cout x Cin x 3 x 3 -> 4 x Cout x Cin x 2 x 2 phase weights (see the module docstring).

    Sums are formed in float32 (float64 for float64 weights) and returned in that dtype: a sum of
    up to four bfloat16/half values is exact there.
    """
    wf = weight.to(torch.float64 if weight.dtype == torch.float64 else torch.float32)
    r = _combine(wf)
    wp = torch.einsum("yak,xcl,oikl->yxoiac", r, r, wf)
    return wp.reshape(4, *weight.shape[:2], 2, 2)


def fold_phase_weight_grad(grad_phase: Tensor) -> Tensor:
    """Adjoint of ``phase_weights``: 4 x Cout x Cin x 2 x 2 -> Cout x Cin x 3 x 3."""
    r = _combine(grad_phase)
    g = grad_phase.reshape(2, 2, *grad_phase.shape[1:])
    return torch.einsum("yak,xcl,yxoiac->oikl", r, r, g)


def interleave_phases(phases: Tensor) -> Tensor:
    """B x 4 x Cout x H x W (phase 2 py + px first) -> B x Cout x 2H x 2W, y[.., 2i+py, 2j+px]."""
    b, _, cout, h, w = phases.shape
    return F.pixel_shuffle(phases.transpose(1, 2).reshape(b, 4 * cout, h, w), 2)


def _phase_outputs(x: Tensor, wp: Tensor) -> Tensor:
    """All four phases as one 2x2 conv with padding 1: B x 4 Cout x (H+1) x (W+1); phase p is the
    window [py : py + H, px : px + W] of its Cout channels."""
    return F.conv2d(x, wp.reshape(-1, *wp.shape[2:]), padding=1)


def upsample_conv3x3_phase_forward(x: Tensor, weight: Tensor) -> Tensor:
    """Path (a) forward: x B x Cin x H x W, weight Cout x Cin x 3 x 3 -> B x Cout x 2H x 2W."""
    b, _, h, w = x.shape
    cout = weight.shape[0]
    out = _phase_outputs(x, phase_weights(weight).to(x.dtype))
    out = out.reshape(b, 4, cout, h + 1, w + 1)
    phases = torch.stack(
        [out[:, 2 * py + px, :, py : py + h, px : px + w] for py in (0, 1) for px in (0, 1)], dim=1
    )
    return interleave_phases(phases).contiguous(memory_format=_layout.memory_format(x))


def upsample_conv3x3_phase_backward(
    grad_y: Tensor, x: Tensor, weight: Tensor, need_x: bool, need_weight: bool
) -> tuple[Tensor | None, Tensor | None]:
    """Path (a) backward: grad_x at the input resolution (transposed 2x2 conv of the scattered
    phase gradients) and grad_weight folded from the four phases' weight gradients."""
    b, _, h, w = x.shape
    cout = weight.shape[0]
    wp = phase_weights(weight).to(x.dtype)
    grad_out = grad_y.new_zeros(b, 4, cout, h + 1, w + 1)
    for py in (0, 1):
        for px in (0, 1):
            grad_out[:, 2 * py + px, :, py : py + h, px : px + w] = grad_y[:, :, py::2, px::2]
    grad_x, grad_wp, _ = torch.ops.aten.convolution_backward(
        grad_out.reshape(b, 4 * cout, h + 1, w + 1), x, wp.reshape(-1, *wp.shape[2:]), None,
        [1, 1], [1, 1], [1, 1], False, [0, 0], 1, [need_x, need_weight, False],
    )  # fmt: skip
    if grad_x is not None:
        grad_x = grad_x.contiguous(memory_format=_layout.memory_format(x))
    grad_weight = None
    if need_weight:
        acc = torch.float64 if x.dtype == torch.float64 else torch.float32
        grad_weight = fold_phase_weight_grad(grad_wp.reshape(wp.shape).to(acc)).to(weight.dtype)
    return grad_x, grad_weight
