"""upsample_conv3x3: equal to the original nn.Upsample + conv3x3, gradients, layouts, errors."""

import pytest
import torch
from torch import nn

from attngan_fast import ops


def _original_block(weight):
    conv = nn.Conv2d(weight.shape[1], weight.shape[0], 3, 1, 1, bias=False).to(weight.dtype)
    conv.weight.data.copy_(weight)
    return nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), conv)


@pytest.mark.parametrize("shape", [(1, 3, 5, 5), (3, 6, 4, 7), (2, 1, 1, 1)])
def test_matches_original_upsample_then_conv(shape):
    x = torch.randn(*shape, dtype=torch.float64)
    weight = torch.randn(5, shape[1], 3, 3, dtype=torch.float64)
    torch.testing.assert_close(ops.upsample_conv3x3(x, weight), _original_block(weight)(x))


def test_gradcheck_float64():
    x = torch.randn(2, 3, 4, 5, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(4, 3, 3, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(ops.upsample_conv3x3, (x, weight))


def test_channels_last_in_channels_last_out_and_stride0_grad():
    x = torch.randn(2, 6, 5, 5).to(memory_format=torch.channels_last).requires_grad_()
    weight = torch.randn(4, 6, 3, 3, requires_grad=True)
    y = ops.upsample_conv3x3(x, weight)
    assert y.is_contiguous(memory_format=torch.channels_last)
    grads = torch.autograd.grad(y, (x, weight), torch.ones(()).expand_as(y))
    ref = torch.autograd.grad(ops.upsample_conv3x3_reference(x, weight).sum(), (x, weight))
    assert grads[0].is_contiguous(memory_format=torch.channels_last)
    for g, r in zip(grads, ref):
        torch.testing.assert_close(g, r)


def test_only_the_needed_gradient_is_computed():
    x = torch.randn(1, 2, 3, 3)
    weight = torch.randn(2, 2, 3, 3, requires_grad=True)
    (g,) = torch.autograd.grad(ops.upsample_conv3x3(x, weight).sum(), (weight,))
    assert g.shape == weight.shape


def test_opcheck():
    x = torch.randn(2, 3, 4, 5, requires_grad=True)
    weight = torch.randn(4, 3, 3, 3, requires_grad=True)
    torch.library.opcheck(torch.ops.attngan_fast.upsample_conv3x3.default, (x, weight, "torch"))
    xl = x.detach().to(memory_format=torch.channels_last).requires_grad_()
    torch.library.opcheck(torch.ops.attngan_fast.upsample_conv3x3.default, (xl, weight, "torch"))


@pytest.mark.parametrize(
    ("x", "weight", "error", "text"),
    [
        (
            torch.randn(3, 4, 4),
            torch.randn(2, 3, 3, 3),
            ValueError,
            "x must have shape B x Cin x H x W",
        ),
        (torch.randn(1, 3, 4, 4), torch.randn(2, 4, 3, 3), ValueError, "Cin = 3"),
        (torch.randn(1, 3, 4, 4), torch.randn(2, 3, 5, 5), ValueError, "Cout x Cin x 3 x 3"),
        (
            torch.randn(1, 3, 4, 4),
            torch.randn(2, 3, 3, 3).double(),
            TypeError,
            "weight is torch.float64",
        ),
        (
            torch.ones(1, 3, 4, 4, dtype=torch.int32),
            torch.randn(2, 3, 3, 3),
            TypeError,
            "x must be",
        ),
    ],
)
def test_bad_inputs_raise_clear_errors(x, weight, error, text):
    with pytest.raises(error, match=text):
        ops.upsample_conv3x3(x, weight)
