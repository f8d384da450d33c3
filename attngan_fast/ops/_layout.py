"""Memory-format helpers for the image ops (NCHW-contiguous and channels-last both accepted), and
for word_attention's B x C x N region features (regions or channels innermost)."""

from __future__ import annotations

import torch


def dense(x: torch.Tensor) -> torch.Tensor:
    """``x`` if it is contiguous or channels-last contiguous, else an NCHW-contiguous copy."""
    if x.is_contiguous() or (x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last)):
        return x
    return x.contiguous()


def dense_regions(x: torch.Tensor) -> torch.Tensor:
    """A B x C x N tensor as it is if dense with the regions (N) or the channels (C) innermost
    (the second: a channels-last feature map flattened to B x C x (H W)), else a contiguous copy."""
    if x.is_contiguous() or x.transpose(1, 2).is_contiguous():
        return x
    return x.contiguous()


def like(t: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """``t`` (B x C x N, shape of ``ref``) with ``ref``'s layout: channels innermost when ``ref``
    has them so (and is not plain contiguous), else contiguous."""
    if not ref.is_contiguous() and ref.transpose(1, 2).is_contiguous():
        return t.transpose(1, 2).contiguous().transpose(1, 2)
    return t.contiguous()


def memory_format(x: torch.Tensor) -> torch.memory_format:
    """The memory format outputs derived from ``x`` should use."""
    if (
        x.dim() == 4
        and not x.is_contiguous()
        and x.is_contiguous(memory_format=torch.channels_last)
    ):
        return torch.channels_last
    return torch.contiguous_format
