"""Memory-format helpers for the image ops (NCHW-contiguous and channels-last both accepted)."""

from __future__ import annotations

import torch


def dense(x: torch.Tensor) -> torch.Tensor:
    """``x`` if it is contiguous or channels-last contiguous, else an NCHW-contiguous copy."""
    if x.is_contiguous() or (x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last)):
        return x
    return x.contiguous()


def memory_format(x: torch.Tensor) -> torch.memory_format:
    """The memory format outputs derived from ``x`` should use."""
    if (
        x.dim() == 4
        and not x.is_contiguous()
        and x.is_contiguous(memory_format=torch.channels_last)
    ):
        return torch.channels_last
    return torch.contiguous_format
