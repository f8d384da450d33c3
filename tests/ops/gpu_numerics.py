"""GPU numerics for the Triton interpreter: what an sm_80 / sm_90 GPU computes where the
interpreter is exact.

The interpreter multiplies ``tl.dot`` operands exactly and rounds ``tl.sqrt``, ``/`` and
``tl.exp`` correctly; compiled Triton on an NVIDIA GPU (sm_80 and newer, the same on sm_90) does
not, so a fp32 parity test on the CPU can pass where the GPU would miss the bar. ``emulate()``
patches the interpreter's builder so that, for float32 operands,

* ``tl.dot(..., input_precision="tf32")`` (Triton's default) sees each operand's low 13 mantissa
  bits dropped: the tensor cores read the raw fp32 bits as TF32, a truncation toward zero; the
  products are exact and accumulate in fp32;
* ``"tf32x3"`` is Triton's three-product split: ``big = cvt.rna.tf32(x)``, ``small = x - big``
  (truncated by the tensor core like any fp32 operand), ``big*big + big*small + small*big``;
* ``"ieee"`` stays exact (fp32 FMA);
* ``tl.sqrt`` (``sqrt.approx.f32``), fp32 division ``x / y`` (``div.full.f32``) and ``tl.exp``
  (``ex2.approx.f32`` of ``x * log2(e)``, the product rounded to fp32 first) are moved by up to
  two units in the last place, a deterministic function of the result (the PTX bound of the
  approximate instructions; ``tl.sigmoid`` is made of the last two), except where the special
  function units are exact: powers of two (``exp`` of an integer exponent such as ``exp(0)``,
  division by a power of two, the square root of a power of four); ``tl.sqrt_rn`` and
  ``tl.div_rn`` stay correctly rounded.

bf16 / fp16 operands are untouched (their products are exact in fp32 on the tensor cores, as in
the interpreter). Turned on for a test session by ``ATTNGAN_FAST_GPU_NUMERICS=1``
(tests/ops/conftest.py); ``emulate()`` is also a context manager for a single test.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import numpy as np

ENV_VAR = "ATTNGAN_FAST_GPU_NUMERICS"
_TF32_DROP = np.uint32(0xFFFFE000)  # keeps sign, exponent and the 10 mantissa bits of TF32
_TF32_HALF = np.uint32(0x1000)
_LOG2E = np.float32(1.4426950408889634)


def requested() -> bool:
    """True when the environment asks for the emulation (``ATTNGAN_FAST_GPU_NUMERICS=1``)."""
    return os.environ.get(ENV_VAR, "0") not in ("", "0")


def tf32_truncate(x: np.ndarray) -> np.ndarray:
    """The fp32 values the tensor cores read as TF32 from raw fp32 bits (round toward zero)."""
    return (x.astype(np.float32).view(np.uint32) & _TF32_DROP).view(np.float32)


def tf32_round(x: np.ndarray) -> np.ndarray:
    """``cvt.rna.tf32.f32``: to the nearest TF32 value, ties away from zero (finite values)."""
    bits = x.astype(np.float32).view(np.uint32)
    rounded = ((bits + _TF32_HALF) & _TF32_DROP).view(np.float32)
    return np.where(np.isfinite(x), rounded, x).astype(np.float32)


def is_power_of_two(x: np.ndarray) -> np.ndarray:
    """True where |x| (float32) is a power of two (mantissa bits all zero, a normal number)."""
    bits = np.asarray(x, dtype=np.float32).view(np.uint32)
    exponent = (bits >> np.uint32(23)) & np.uint32(0xFF)
    return ((bits & np.uint32(0x7FFFFF)) == 0) & (exponent > 0) & (exponent < 255)


def perturb_ulps(y: np.ndarray, max_ulps: int = 2) -> np.ndarray:
    """``y`` (float32) moved by a deterministic -max_ulps..max_ulps units in the last place;
    zeros, infinities and NaNs kept."""
    y = np.asarray(y, dtype=np.float32)
    bits = y.view(np.uint32).astype(np.uint64)
    mixed = (bits * np.uint64(2654435761)) & np.uint64(0xFFFFFFFF)
    k = (mixed >> np.uint64(16)).astype(np.int64) % (2 * max_ulps + 1) - max_ulps
    out = (y.view(np.uint32).astype(np.int64) + k).astype(np.uint32).view(np.float32)
    keep = (y == 0) | ~np.isfinite(y) | (np.sign(out) != np.sign(y)) | ~np.isfinite(out)
    return np.where(keep, y, out)


def cudnn_operands(*tensors):
    """The operands a GPU's cuDNN convolution multiplies, for the same-dtype torch reference of a
    TF32 kernel run by the interpreter: fp32 CPU tensors rounded to TF32 (``cvt.rna``) when
    ``torch.backends.cudnn.allow_tf32`` (PyTorch's default); unchanged otherwise (on a GPU
    cuDNN rounds them itself)."""
    import torch

    if not torch.backends.cudnn.allow_tf32 or any(t.is_cuda for t in tensors):
        return tensors
    return tuple(
        torch.from_numpy(tf32_round(t.detach().numpy())).requires_grad_(t.requires_grad)
        if t.dtype == torch.float32 else t
        for t in tensors
    )  # fmt: skip


def _dot_operands(a: np.ndarray, b: np.ndarray, precision: str) -> list[tuple]:
    """The (a, b) pairs whose fp32 products the GPU sums for ``precision``."""
    if precision == "tf32":
        return [(tf32_truncate(a), tf32_truncate(b))]
    if precision == "tf32x3":
        a_big, b_big = tf32_round(a), tf32_round(b)
        a_small = tf32_truncate(a.astype(np.float32) - a_big)
        b_small = tf32_truncate(b.astype(np.float32) - b_big)
        return [(a_small, b_big), (a_big, b_small), (a_big, b_big)]
    return [(a, b)]


def dot(a: np.ndarray, b: np.ndarray, acc: np.ndarray, precision: str) -> np.ndarray:
    """``acc + a @ b`` as the GPU's tensor cores compute it for fp32 ``a``, ``b``."""
    out = acc
    for x, y in _dot_operands(a, b, precision):
        out = np.matmul(x, y, dtype=acc.dtype) + out
    return out


def _approx_exp(x: np.ndarray) -> np.ndarray:
    scaled = (x.astype(np.float32) * _LOG2E).astype(np.float32)
    with np.errstate(over="ignore", under="ignore"):
        exact = np.exp2(scaled.astype(np.float64)).astype(np.float32)
    return np.where(scaled == np.round(scaled), exact, perturb_ulps(exact))


def _approx_div(quotient: np.ndarray, divisor: np.ndarray) -> np.ndarray:
    divisor = np.broadcast_to(divisor, quotient.shape)
    return np.where(is_power_of_two(divisor), quotient, perturb_ulps(quotient))


def _approx_sqrt(root: np.ndarray) -> np.ndarray:
    return np.where(is_power_of_two(root), root, perturb_ulps(root))


_active = False


def active() -> bool:
    """True inside ``emulate()``."""
    return _active


@contextlib.contextmanager
def emulate() -> Iterator[None]:
    """Patch the interpreter's builder as the module docstring says, for the ``with`` body
    (nothing more when the emulation is already on)."""
    global _active
    if _active:
        yield
        return
    from triton.runtime import interpreter

    builder = interpreter.InterpreterBuilder
    TensorHandle = interpreter.TensorHandle
    saved = {
        name: getattr(builder, name) for name in ("create_dot", "create_sqrt", "create_fdiv",
                                                  "create_exp")
    }  # fmt: skip

    def is_f32(*handles) -> bool:
        return all(h.data.dtype == np.float32 for h in handles)

    def create_dot(self, a, b, d, input_precision, max_num_imprecise_acc):
        if not is_f32(a, b):
            return saved["create_dot"](self, a, b, d, input_precision, max_num_imprecise_acc)
        precision = getattr(input_precision, "name", str(input_precision)).lower()
        return TensorHandle(dot(a.data, b.data, d.data, precision), d.dtype.scalar)

    def create_sqrt(self, arg):
        out = saved["create_sqrt"](self, arg)
        return TensorHandle(_approx_sqrt(out.data), out.dtype) if is_f32(arg) else out

    def create_fdiv(self, lhs, rhs):
        out = saved["create_fdiv"](self, lhs, rhs)
        if not is_f32(out):
            return out
        return TensorHandle(_approx_div(out.data, rhs.data), out.dtype)

    def create_exp(self, arg):
        if not is_f32(arg):
            return saved["create_exp"](self, arg)
        return TensorHandle(_approx_exp(arg.data), arg.dtype.scalar)

    patched = {"create_dot": create_dot, "create_sqrt": create_sqrt, "create_fdiv": create_fdiv,
               "create_exp": create_exp}  # fmt: skip
    for name, fn in patched.items():
        setattr(builder, name, fn)
    _active = True
    try:
        yield
    finally:
        _active = False
        for name, fn in saved.items():
            setattr(builder, name, fn)
