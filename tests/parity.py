"""The project's parity rule, in one place for the tests of every backend.

A fast backend's result is compared with the float64 result (``exact``) and with the result of
the same-dtype ``torch`` reference (``ref``): its error may be at most twice the reference's
error plus a small slack of a few units of rounding. Two forms of the error:

* ``assert_parity``: the largest absolute error, with the slack relative to the exact result's
  magnitude, floored (``scale_floor``): a gradient that cancels to (nearly) zero, such as that of
  a softmax over one word, is still a difference of O(1) terms that were each rounded;
* ``assert_rel_parity``: the relative error in the 2-norm (convolutions and batch norm, whose
  outputs are large tensors of similar entries).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def _eps(dtype: torch.dtype) -> float:
    """Unit of rounding of ``dtype``; float32's for float64 results (fp32 arithmetic inside)."""
    return torch.finfo(torch.float32 if dtype == torch.float64 else dtype).eps


def assert_parity(
    name: str,
    fast: Tensor,
    ref: Tensor,
    exact: Tensor,
    *,
    slack_eps: float = 16.0,
    half_slack_eps: float = 2.0,
    eps: float | None = None,
    scale_floor: float = 1.0,
) -> None:
    """max |fast - exact| <= 2 max |ref - exact| + slack * eps * max(max |exact|, scale_floor).

    ``eps`` defaults to that of ``fast``'s dtype; bf16 / fp16 results, computed in fp32 and
    rounded once, get ``half_slack_eps`` units instead of ``slack_eps``.
    """
    fast_err = (fast.double() - exact).abs().max().item()
    ref_err = (ref.double() - exact).abs().max().item()
    scale = max(exact.abs().max().item(), scale_floor)
    half = fast.dtype in (torch.bfloat16, torch.float16)
    slack = (half_slack_eps if half else slack_eps) * (_eps(fast.dtype) if eps is None else eps)
    assert fast_err <= 2 * ref_err + slack * scale, (name, fast_err, ref_err, scale)


def rel_error(a: Tensor, exact: Tensor) -> float:
    """||a - exact|| / ||exact|| in float64 (2-norm over all elements)."""
    a, exact = a.double(), exact.double()
    return ((a - exact).norm() / exact.norm().clamp_min(1e-30)).item()


def assert_rel_parity(
    name: str, fast: Tensor, ref: Tensor, exact: Tensor, dtype: torch.dtype, slack_eps: float = 4.0
) -> None:
    """rel_error(fast) <= 2 rel_error(ref) + slack_eps * eps(dtype)."""
    err, err_ref = rel_error(fast, exact), rel_error(ref, exact)
    assert err <= 2 * err_ref + slack_eps * torch.finfo(dtype).eps, (name, err, err_ref)


def sum_slack_eps(dtype: torch.dtype, values_summed: int) -> float:
    """The ``slack_eps`` of ``assert_rel_parity`` for an output reduced over ``values_summed``
    values per channel (BatchNorm's statistics and its affine gradients): a bf16 / fp16 output
    is computed in fp32 and rounded once (half a unit of its dtype: 1 unit); an fp32 / fp64 one
    accumulates a tiled or pairwise sum's rounding, log2(N) units of its dtype."""
    if dtype in (torch.bfloat16, torch.float16):
        return 1.0
    return max(1.0, math.log2(values_summed))
