"""Four-phase algebra of nearest x2 + conv3x3; path (a): one 2x2 ``F.conv2d`` + pixel shuffle."""

import pytest
import torch
import torch.nn.functional as F
from parity import assert_rel_parity

from attngan_fast.ops import _layout, phase_conv
from attngan_fast.ops.upsample_conv import upsample_conv3x3_reference


def test_phase_weights_taps_by_hand():
    w = torch.randn(2, 3, 3, 3, dtype=torch.float64)
    wp = phase_conv.phase_weights(w)
    assert wp.shape == (4, 2, 3, 2, 2)
    rows = {0: [w[..., 0:1, :], w[..., 1:3, :].sum(-2, keepdim=True)],
            1: [w[..., 0:2, :].sum(-2, keepdim=True), w[..., 2:3, :]]}  # fmt: skip
    for py in (0, 1):
        for px in (0, 1):
            for a in (0, 1):
                r = rows[py][a]  # 1 x 3 over kx
                cols = {0: [r[..., 0], r[..., 1:3].sum(-1)], 1: [r[..., 0:2].sum(-1), r[..., 2]]}
                for c in (0, 1):
                    torch.testing.assert_close(wp[2 * py + px, :, :, a, c], cols[px][c][..., 0])


def test_fold_is_the_adjoint_of_phase_weights():
    w = torch.randn(5, 3, 3, 3, dtype=torch.float64)
    g = torch.randn(4, 5, 3, 2, 2, dtype=torch.float64)
    lhs = (phase_conv.phase_weights(w) * g).sum()
    rhs = (w * phase_conv.fold_phase_weight_grad(g)).sum()
    torch.testing.assert_close(lhs, rhs, rtol=1e-13, atol=1e-13)


def test_interleave_phases_places_each_phase():
    phases = torch.randn(2, 4, 3, 5, 7)
    y = phase_conv.interleave_phases(phases)
    for py in (0, 1):
        for px in (0, 1):
            assert torch.equal(y[:, :, py::2, px::2], phases[:, 2 * py + px])


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("shape", [(1, 5, 4, 7, 6), (3, 3, 5, 1, 1), (2, 6, 1, 3, 5)])
def test_path_a_equals_the_reference_in_float64(shape, channels_last):
    batch, cin, cout, h, w = shape
    x = torch.randn(batch, cin, h, w, dtype=torch.float64)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    x.requires_grad_(True)
    weight = torch.randn(cout, cin, 3, 3, dtype=torch.float64, requires_grad=True)
    y_ref = upsample_conv3x3_reference(x, weight)
    grad_y = torch.randn_like(y_ref)
    gx_ref, gw_ref = torch.autograd.grad(y_ref, (x, weight), grad_y)

    y = phase_conv.upsample_conv3x3_phase_forward(x.detach(), weight.detach())
    gx, gw = phase_conv.upsample_conv3x3_phase_backward(
        grad_y, x.detach(), weight.detach(), True, True
    )
    tol = {"rtol": 1e-12, "atol": 1e-12}
    torch.testing.assert_close(y, y_ref, **tol)
    torch.testing.assert_close(gx, gx_ref, **tol)
    torch.testing.assert_close(gw, gw_ref, **tol)
    fmt = _layout.memory_format(x)
    assert y.is_contiguous(memory_format=fmt) and gx.is_contiguous(memory_format=fmt)
    no_x = phase_conv.upsample_conv3x3_phase_backward(
        grad_y, x.detach(), weight.detach(), False, True
    )
    assert no_x[0] is None


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_path_a_within_twice_the_reference_error(dtype):
    """Phase weights are rounded to the input dtype: the error must stay within 2x torch's."""
    x = torch.randn(3, 16, 5, 6).to(dtype)
    weight = (torch.randn(24, 16, 3, 3) / 12).to(dtype)
    y64 = upsample_conv3x3_reference(x.double(), weight.double())
    grad_y = torch.randn_like(y64).to(dtype)
    x64 = x.double().requires_grad_(True)
    w64 = weight.double().requires_grad_(True)
    gx64, gw64 = torch.autograd.grad(
        upsample_conv3x3_reference(x64, w64), (x64, w64), grad_y.double()
    )

    xr, wr = x.clone().requires_grad_(True), weight.clone().requires_grad_(True)
    y_ref = upsample_conv3x3_reference(xr, wr)
    gx_ref, gw_ref = torch.autograd.grad(y_ref, (xr, wr), grad_y)
    y = phase_conv.upsample_conv3x3_phase_forward(x, weight)
    gx, gw = phase_conv.upsample_conv3x3_phase_backward(grad_y, x, weight, True, True)
    for name, got, ref, exact in (
        ("y", y, y_ref, y64),
        ("grad_x", gx, gx_ref, gx64),
        ("grad_weight", gw, gw_ref, gw64),
    ):
        assert got.dtype == dtype, name
        assert_rel_parity(name, got, ref, exact, dtype)


def test_path_a_is_a_2x2_conv_per_phase():
    """Each phase of the output is exactly F.conv2d with that phase's 2x2 kernel."""
    x = torch.randn(2, 3, 4, 5, dtype=torch.float64)
    w = torch.randn(4, 3, 3, 3, dtype=torch.float64)
    y = phase_conv.upsample_conv3x3_phase_forward(x, w)
    wp = phase_conv.phase_weights(w)
    for py in (0, 1):
        for px in (0, 1):
            xp = F.pad(x, (1 - px, px, 1 - py, py))
            torch.testing.assert_close(y[:, :, py::2, px::2], F.conv2d(xp, wp[2 * py + px]))
