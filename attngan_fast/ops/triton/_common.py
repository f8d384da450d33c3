"""Helpers shared by the Triton kernels: the device guard of every launcher; for the attention
kernels (word_attention, damsm) tile sizes, launch sizing and the fp32-accurate ``tl.dot`` wrappers.

Precision policy: float32 operands go through ``tl.dot`` with ``FP32_DOT_PRECISION`` ("tf32x3":
three TF32 tensor-core products, about float32 accuracy, where plain TF32 would miss the parity
bar); a float32 operand multiplied by a bf16/fp16 one is split into a high and a low half of the
low-precision type (two tensor-core products, about 16 mantissa bits) so that probabilities and
gradients computed in float32 are not rounded to 8 bits before the product. The GPU's numerics
(TF32 truncation, 3xTF32's split, approximate exp / sqrt / division) are emulated for the CPU
parity tests by tests/ops/gpu_numerics.py (``ATTNGAN_FAST_GPU_NUMERICS=1``).
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Callable
from typing import TypeVar

import torch
import triton
import triton.language as tl

from attngan_fast.ops import registry

FP32_DOT_PRECISION = "tf32x3"
# tl.dot needs every dimension >= 16: smaller dimensions are padded (and masked) up to it.
MIN_DOT = 16

TRITON_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
F = TypeVar("F", bound=Callable)
TRITON = registry.Backend("triton", {"cuda": registry.RANK_TRITON})  # first on CUDA, not on CPU


def triton_interpret() -> bool:
    """True when Triton kernels run on the CPU through the interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def device_support(call: registry.Call) -> str | None:
    """Where the Triton kernels run: CUDA tensors with a usable GPU, or CPU tensors through the
    interpreter (None), else why not."""
    device = call.device
    if device.type == "cuda":
        return None if registry.cuda_usable() else "no usable CUDA GPU (torch.cuda is unavailable)"
    if device.type == "cpu" and triton_interpret():
        return None
    return (
        f"the triton kernels run on CUDA tensors (got {device.type}); on the CPU they need "
        "TRITON_INTERPRET=1 set before triton is first imported"
    )


def dtype_support(call: registry.Call) -> str | None:
    """float32, bfloat16 and float16 inputs (None), else why not (float64: no fp64 ``tl.dot``)."""
    if call.dtype in TRITON_DTYPES:
        return None
    return f"its kernels take float32, bfloat16 or float16 inputs, not {call.dtype}"


def sm80_support(call: registry.Call, what: str) -> str | None:
    """None unless ``call`` is on a CUDA GPU older than sm_80, which lacks ``what``."""
    if call.device.type != "cuda":
        return None
    major, minor = registry.cuda_capability(call.device)
    if major >= 8:
        return None
    return f"{what} need a GPU of compute capability 8.0 or newer (this one is {major}.{minor})"


def on_device(device: torch.device) -> contextlib.AbstractContextManager:
    """``device`` made the current CUDA device for the body (Triton launches on the current
    device and its current stream, whatever its arguments' device); nothing for CPU tensors."""
    if device.type == "cuda":
        return torch.cuda.device(device)
    return contextlib.nullcontext()


def launches_on_input_device(launcher: F) -> F:
    """Decorator of a launcher: its kernels run on the device of its first tensor argument."""

    @functools.wraps(launcher)
    def guarded(*args, **kwargs):
        first = next(a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor))
        with on_device(first.device):
            return launcher(*args, **kwargs)

    return guarded  # type: ignore[return-value]


def dot_block(size: int) -> int:
    """Power-of-two tile covering ``size`` elements, at least ``MIN_DOT``."""
    return max(MIN_DOT, triton.next_power_of_2(size))


@functools.cache
def _sm_count(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def resident_programs(device: torch.device) -> int:
    """How many programs keep the device busy (a few per SM); small under the interpreter."""
    if device.type != "cuda":
        return 8
    return 4 * _sm_count(device.index if device.index is not None else torch.cuda.current_device())


def check_dtype(op: str, *tensors: torch.Tensor) -> None:
    """The Triton kernels take float32, bfloat16 and float16 (float64: use backend='torch')."""
    for t in tensors:
        if t.dtype not in TRITON_DTYPES:
            raise TypeError(
                f"{op}: the triton backend takes float32, bfloat16 or float16 inputs, "
                f"got {t.dtype} (use backend='torch' for float64)"
            )


def single_config(configs: list[triton.Config]) -> list[triton.Config]:
    """Under the interpreter there is nothing to tune: keep only the first (smallest) config."""
    return configs[:1] if triton_interpret() else configs


@triton.jit
def dot_f32_lhs(x, y, acc, LOWP: tl.constexpr, PREC: tl.constexpr):
    """``acc + x @ y`` for a float32 tile ``x`` and a tile ``y`` of the input dtype."""
    if LOWP:
        hi = x.to(y.dtype)
        lo = (x - hi.to(tl.float32)).to(y.dtype)
        acc = tl.dot(hi, y, acc)
        acc = tl.dot(lo, y, acc)
    else:
        acc = tl.dot(x, y, acc, input_precision=PREC)
    return acc


@triton.jit
def dot_f32_rhs(x, y, acc, LOWP: tl.constexpr, PREC: tl.constexpr):
    """``acc + x @ y`` for a tile ``x`` of the input dtype and a float32 tile ``y``."""
    if LOWP:
        hi = y.to(x.dtype)
        lo = (y - hi.to(tl.float32)).to(x.dtype)
        acc = tl.dot(x, hi, acc)
        acc = tl.dot(x, lo, acc)
    else:
        acc = tl.dot(x, y, acc, input_precision=PREC)
    return acc
