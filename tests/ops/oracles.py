"""float64 oracles of the image ops, written from their definitions and sharing no code with
the library: the parity suites of upsample_conv3x3, batch_norm_act and upsample_conv3x3_bn_glu
compare every backend with them."""

from __future__ import annotations

import torch
import torch.nn.functional as F

MOMENTUM, EPS = 0.1, 1e-5  # the running statistics' momentum and BatchNorm's epsilon (nn's)


def exact_upsample_conv(x, weight):
    """float64 from the definition: y[b, o, i, j] = sum over c, ky, kx of
    weight[o, c, ky, kx] * up[b, c, i + ky - 1, j + kx - 1], with up[i, j] = x[i // 2, j // 2]
    and zero outside the image."""
    up = x.double().repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)
    padded = F.pad(up, (1, 1, 1, 1))
    h2, w2 = up.shape[2:]
    w = weight.double()
    return sum(
        torch.einsum("bchw,oc->bohw", padded[:, :, ky : ky + h2, kx : kx + w2], w[:, :, ky, kx])
        for ky in range(3)
        for kx in range(3)
    )


def exact_batch_norm(
    x, residual, weight, bias, running, training, mode, momentum=MOMENTUM, eps=EPS
):
    """float64 (y, new running_mean, new running_var): per channel, over the batch and the
    pixels, x normalised by the batch's mean and biased variance (training) or the running ones,
    then the affine, then GLU over the channel halves or + residual; the running statistics move
    by ``momentum`` towards the batch mean and unbiased variance."""
    x = x.double()
    dims = [0, *range(2, x.dim())]
    shape = (1, -1) + (1,) * (x.dim() - 2)
    rm, rv = (t.double() for t in running)
    if training:
        mean = x.mean(dims)
        var = ((x - mean.view(shape)) ** 2).mean(dims)
        n = x.numel() // x.shape[1]
        rm = (1 - momentum) * rm + momentum * mean.detach()
        rv = (1 - momentum) * rv + momentum * var.detach() * n / (n - 1)
    else:
        mean, var = rm, rv
    z = (x - mean.view(shape)) / torch.sqrt(var.view(shape) + eps)
    if weight is not None:
        z = z * weight.double().view(shape) + bias.double().view(shape)
    if mode == "glu":
        half = z.shape[1] // 2
        return z[:, :half] * torch.sigmoid(z[:, half:]), rm, rv
    return z + residual.double(), rm, rv
