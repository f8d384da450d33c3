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
CHOICES = (*PRECISIONS, "auto")  # what the command line accepts; see resolve_precision
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes in bf16 natively: a CUDA GPU with bf16 support, or a CPU with
    AVX-512 BF16 / AMX (``ops.cpu.native_bf16``); elsewhere bf16 is emulated and slow."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        from attngan_fast.ops.cpu import native_bf16 as cpu_native_bf16

        return cpu_native_bf16()
    return False


def resolve_precision(precision: str, device: torch.device) -> tuple[str, str | None]:
    """The precision to train in and a note for the user (None when there is nothing to say).

    ``auto`` is bf16 where the device computes bf16 natively, else fp32 (the note says so);
    ``bf16`` asked for on a CPU without native bf16 is kept, with a note that it is emulated.
    """
    if precision == "auto":
        if native_bf16(device):
            return "bf16", None
        where = "this CPU has no AVX-512 BF16 / AMX" if device.type == "cpu" else "no native bf16"
        return "fp32", f"--precision auto: {where}, training in fp32"
    check_precision(precision, device)
    if precision == "bf16" and device.type == "cpu" and not native_bf16(device):
        return precision, (
            "bf16 on a CPU without AVX-512 BF16 / AMX is emulated and slower than fp32 "
            "(--precision auto picks fp32 here)"
        )
    return precision, None


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
