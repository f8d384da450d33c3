"""The GPU-numerics emulation of the interpreter (gpu_numerics.py) does what the GPU does.

CPU only: on a GPU the kernels compute with the real numerics and there is nothing to emulate.
"""

from __future__ import annotations

import gpu_numerics
import numpy as np
import pytest
import torch
import triton
import triton.language as tl

from attngan_fast.ops.triton._common import triton_interpret

pytestmark = pytest.mark.skipif(not triton_interpret(), reason="emulates GPU numerics on the CPU")


@triton.jit
def _dot_kernel(a_ptr, b_ptr, out_ptr, PREC: tl.constexpr):
    offs = tl.arange(0, 16)
    a = tl.load(a_ptr + offs[:, None] * 16 + offs[None, :])
    b = tl.load(b_ptr + offs[:, None] * 16 + offs[None, :])
    tl.store(out_ptr + offs[:, None] * 16 + offs[None, :], tl.dot(a, b, input_precision=PREC))


@triton.jit
def _math_kernel(x_ptr, y_ptr, sqrt_ptr, sqrt_rn_ptr, div_ptr, div_rn_ptr, exp_ptr):
    offs = tl.arange(0, 1024)
    x = tl.load(x_ptr + offs)
    y = tl.load(y_ptr + offs)
    tl.store(sqrt_ptr + offs, tl.sqrt(x))
    tl.store(sqrt_rn_ptr + offs, tl.sqrt_rn(x))
    tl.store(div_ptr + offs, x / y)
    tl.store(div_rn_ptr + offs, tl.div_rn(x, y))
    tl.store(exp_ptr + offs, tl.exp(-x))


def _dot(a, b, precision):
    out = torch.empty(16, 16)
    _dot_kernel[(1,)](a, b, out, PREC=precision)
    return out.double()


def _ulps(got: torch.Tensor, exact: torch.Tensor) -> torch.Tensor:
    spacing = torch.from_numpy(np.spacing(exact.float().abs().numpy())).double()
    return (got.double() - exact).abs() / spacing


def test_tf32_truncates_tf32x3_splits_ieee_is_exact():
    a = torch.randn(16, 16)
    b = torch.randn(16, 16)
    exact = a.double() @ b.double()
    truncated = gpu_numerics.tf32_truncate(a.numpy()), gpu_numerics.tf32_truncate(b.numpy())
    with gpu_numerics.emulate():
        tf32, tf32x3, ieee = (_dot(a, b, p) for p in ("tf32", "tf32x3", "ieee"))
    expect = torch.from_numpy(truncated[0]).double() @ torch.from_numpy(truncated[1]).double()
    torch.testing.assert_close(tf32, expect, rtol=1e-6, atol=1e-6)
    tf32_err = (tf32 - exact).abs().max()
    assert 1e-4 < tf32_err < 1e-1  # 10 mantissa bits: about 2**-11 of each product
    assert (tf32x3 - exact).abs().max() < 1e-5 < tf32_err / 100
    torch.testing.assert_close(ieee, exact, rtol=1e-6, atol=1e-5)
    if not gpu_numerics.active():  # (not under a whole session's emulation)
        assert (_dot(a, b, "tf32") - exact).abs().max() < 1e-5  # restored: exact again


def test_truncation_is_toward_zero_and_rounding_to_nearest_ties_away():
    """TF32 keeps 10 mantissa bits: its unit in the last place at 1 is 2**-10."""
    above = 1 + 2**-10 + 2**-11 + 2**-12
    x = np.array([above, -above, 1 + 2**-11], dtype=np.float32)
    truncated = [1 + 2**-10, -(1 + 2**-10), 1]
    np.testing.assert_array_equal(gpu_numerics.tf32_truncate(x), truncated)
    np.testing.assert_array_equal(gpu_numerics.tf32_round(x), [1 + 2**-9, -(1 + 2**-9), 1 + 2**-10])


def test_approximate_sqrt_division_and_exp_stay_within_two_ulps():
    x = torch.rand(1024) * 10 + 0.1
    y = torch.randn(1024)
    outs = [torch.empty(1024) for _ in range(5)]
    with gpu_numerics.emulate():
        _math_kernel[(1,)](x, y, *outs)
    sqrt, sqrt_rn, div, div_rn, exp = outs
    for got, exact, precise in (
        (sqrt, x.double().sqrt(), False),
        (sqrt_rn, x.double().sqrt(), True),
        (div, x.double() / y.double(), False),
        (div_rn, x.double() / y.double(), True),
    ):
        ulps = _ulps(got, exact)
        if precise:
            assert ulps.max() <= 0.5
        else:
            assert 0.5 < ulps.max() <= 2.5
    exp_ulps = _ulps(exp, (-x.double()).exp())
    # plus the error of the fp32 exponent x * log2(e) (its rounding: half its spacing; log2(e)
    # in fp32: 2e-8 relative), times ln 2, relative to the result (>= 2**-24 per unit)
    product = (x * 1.4426950408889634).numpy()
    exponent_err = 0.5 * np.spacing(product) + 2e-8 * product
    bound = 2.5 + torch.from_numpy(exponent_err * np.log(2) * 2**24).double()
    assert exp_ulps.max() > 0.5 and (exp_ulps <= bound).all()


def test_powers_of_two_are_exact_as_on_the_special_function_units():
    x = torch.tensor([0.0, 2.0, 4.0, 0.25] * 256)
    y = torch.tensor([1.0, 2.0, 0.5, 4.0] * 256)
    outs = [torch.empty(1024) for _ in range(5)]
    with gpu_numerics.emulate():
        _math_kernel[(1,)](x, y, *outs)
    sqrt, _, div, _, exp = outs
    assert torch.equal(div, x / y) and torch.equal(sqrt[2:4], torch.tensor([2.0, 0.5]))
    assert exp[0] == 1.0  # exp(0): the exponent 0 is an integer


def test_bf16_and_fp16_dots_are_untouched():
    a = torch.randn(16, 16).half()
    b = torch.randn(16, 16).half()
    with gpu_numerics.emulate():
        emulated = _dot(a, b, "tf32")
    torch.testing.assert_close(emulated, _dot(a, b, "tf32"), rtol=0, atol=0)
