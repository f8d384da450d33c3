"""Mixed precision: ``fp32``, ``bf16`` or ``fp16`` autocast, and the gradient scaler fp16 needs.

Parameters, optimiser states and the EMA stay float32; autocast runs matmuls and convolutions in
the low-precision type while PyTorch keeps reductions, softmaxes and losses in float32, and the
fused ops accumulate in float32 (batch-norm statistics included). ``fp16`` uses ONE
``torch.amp.GradScaler`` for all optimisers (D's and G's), as the PyTorch AMP documentation
prescribes for several models and optimisers: ``scaler.scale(loss).backward()`` and
``scaler.step(opt)`` for each, then ``scaler.update()`` once per iteration.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from attngan_fast.errors import UsageError

PRECISIONS = ("fp32", "bf16", "fp16")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def check_precision(precision: str, device: torch.device) -> None:
    """Raise UsageError for an unknown precision or fp16 on a device without fp16 autocast."""
    if precision not in PRECISIONS:
        raise UsageError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "fp16" and device.type != "cuda":
        raise UsageError(
            "fp16 mixed precision needs a CUDA GPU (on CPU use --precision bf16 or fp32)"
        )


@contextlib.contextmanager
def autocast(precision: str, device: torch.device) -> Iterator[None]:
    """``torch.autocast`` for ``bf16`` / ``fp16``; nothing for ``fp32``."""
    if precision == "fp32":
        yield
        return
    with torch.autocast(device_type=device.type, dtype=_DTYPES[precision]):
        yield


def make_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler | None:
    """The single GradScaler of an fp16 run, None otherwise (bf16 needs no loss scaling)."""
    if precision != "fp16":
        return None
    return torch.amp.GradScaler(device.type)
