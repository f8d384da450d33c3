"""batch_norm_glu / batch_norm_add: equal to nn.BatchNorm + GLU / + residual, running statistics."""

import pytest
import torch
from torch import nn

from attngan_fast import ops


def _bn(channels, dims, dtype=torch.float64):
    bn = (nn.BatchNorm2d if dims == 4 else nn.BatchNorm1d)(channels).to(dtype)
    with torch.no_grad():
        bn.weight.normal_(1.0, 0.2)
        bn.bias.normal_(0.0, 0.2)
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2.0)
    return bn


def _run(op, bn, x, residual, training):
    args = (bn.weight, bn.bias, bn.running_mean, bn.running_var, training, bn.momentum, bn.eps)
    return op(x, *args) if residual is None else op(x, residual, *args)


@pytest.mark.parametrize("shape", [(3, 6, 5, 5), (1, 6, 3, 2), (4, 6)])
@pytest.mark.parametrize("training", [True, False])
def test_glu_matches_original_sequential_over_several_steps(shape, training):
    ours, theirs = _bn(6, len(shape)), None
    theirs = _bn(6, len(shape))
    theirs.load_state_dict(ours.state_dict())
    original = nn.Sequential(theirs, nn.GLU(dim=1)).train(training)
    for _ in range(3):
        x = torch.randn(*shape, dtype=torch.float64) * 2 + 1
        y = _run(ops.batch_norm_glu, ours, x, None, training)
        torch.testing.assert_close(y, original(x))
    torch.testing.assert_close(ours.running_mean, theirs.running_mean)
    torch.testing.assert_close(ours.running_var, theirs.running_var)


@pytest.mark.parametrize("shape", [(3, 6, 5, 5), (4, 5)])
@pytest.mark.parametrize("training", [True, False])
def test_add_matches_batch_norm_plus_residual(shape, training):
    ours = _bn(shape[1], len(shape))
    theirs = _bn(shape[1], len(shape))
    theirs.load_state_dict(ours.state_dict())
    theirs.train(training)
    x = torch.randn(*shape, dtype=torch.float64)
    residual = torch.randn(*shape, dtype=torch.float64)
    torch.testing.assert_close(
        _run(ops.batch_norm_add, ours, x, residual, training), theirs(x) + residual
    )
    torch.testing.assert_close(ours.running_var, theirs.running_var)


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("shape", [(3, 6, 5, 5), (4, 6)])
def test_gradcheck_float64(training, shape):
    x = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    residual = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    weight = (1 + 0.1 * torch.randn(6, dtype=torch.float64)).requires_grad_()
    bias = (0.1 * torch.randn(6, dtype=torch.float64)).requires_grad_()
    stats = torch.randn(6, dtype=torch.float64), torch.rand(6, dtype=torch.float64) + 0.5

    def glu(x, w, b):
        return ops.batch_norm_glu(x, w, b, stats[0].clone(), stats[1].clone(), training, 0.1, 1e-5)

    def add(x, r, w, b):
        return ops.batch_norm_add(
            x, r, w, b, stats[0].clone(), stats[1].clone(), training, 0.1, 1e-5
        )

    assert torch.autograd.gradcheck(glu, (x, weight, bias))
    assert torch.autograd.gradcheck(add, (x, residual, weight, bias))


def test_without_affine_and_without_running_stats():
    x = torch.randn(4, 6, 3, 3, dtype=torch.float64, requires_grad=True)
    y = ops.batch_norm_glu(x, None, None, None, None, True, 0.1, 1e-5)
    ref = ops.batch_norm_glu_reference(x, None, None, None, None, True, 0.1, 1e-5)
    torch.testing.assert_close(y, ref)
    assert torch.autograd.gradcheck(
        lambda x: ops.batch_norm_glu(x, None, None, None, None, True, 0.1, 1e-5), (x,)
    )


def test_channels_last_and_stride0_grad():
    x = torch.randn(2, 6, 5, 5).to(memory_format=torch.channels_last).requires_grad_()
    weight, bias = torch.randn(6, requires_grad=True), torch.randn(6, requires_grad=True)
    y = ops.batch_norm_glu(x, weight, bias, None, None, True, 0.1, 1e-5)
    assert y.is_contiguous(memory_format=torch.channels_last)
    got = torch.autograd.grad(y, (x, weight, bias), torch.ones(()).expand_as(y))
    ref_y = ops.batch_norm_glu_reference(x, weight, bias, None, None, True, 0.1, 1e-5)
    ref = torch.autograd.grad(ref_y.sum(), (x, weight, bias))
    for g, r in zip(got, ref):
        torch.testing.assert_close(g, r, atol=1e-5, rtol=1e-4)


def test_half_input_with_float32_parameters():
    bn = _bn(6, 4, torch.float32)
    x = torch.randn(3, 6, 4, 4).bfloat16()
    y = _run(ops.batch_norm_glu, bn, x, None, True)
    assert y.dtype == torch.bfloat16 and bn.running_mean.dtype == torch.float32


def test_opcheck():
    x = torch.randn(3, 6, 4, 5, requires_grad=True)
    w, b = torch.randn(6, requires_grad=True), torch.randn(6, requires_grad=True)
    op = torch.ops.attngan_fast.batch_norm_act.default
    stats = (torch.zeros(6), torch.ones(6))
    torch.library.opcheck(op, (x, None, w, b, *stats, True, 1e-5, "glu", "torch"))
    torch.library.opcheck(op, (x, None, w, b, *stats, False, 1e-5, "glu", "torch"))
    r = torch.randn(3, 6, 4, 5, requires_grad=True)
    torch.library.opcheck(op, (x, r, w, b, *stats, True, 1e-5, "add", "torch"))
    torch.library.opcheck(op, (x[:, :, 0, 0], None, w, b, *stats, True, 1e-5, "glu", "torch"))


@pytest.mark.parametrize(
    ("kwargs", "error", "text"),
    [
        (dict(x=torch.randn(2, 5, 3, 3)), ValueError, "even number of channels"),
        (dict(weight=torch.randn(4)), ValueError, "weight must have shape C = 6"),
        (dict(running_var=None), ValueError, "both be tensors or both be None"),
        (dict(running_mean=None, running_var=None, training=False), ValueError, "eval mode"),
        (dict(x=torch.randn(1, 6)), ValueError, "more than 1 value per channel"),
        (dict(x=torch.randn(6)), ValueError, "x must have shape B x C"),
        (dict(bias=torch.ones(6, dtype=torch.long)), TypeError, "bias must be float32"),
    ],
)
def test_bad_inputs_raise_clear_errors(kwargs, error, text):
    args = dict(
        x=torch.randn(2, 6, 3, 3),
        weight=torch.ones(6),
        bias=torch.zeros(6),
        running_mean=torch.zeros(6),
        running_var=torch.ones(6),
        training=True,
        momentum=0.1,
        eps=1e-5,
    )
    args.update(kwargs)
    with pytest.raises(error, match=text):
        ops.batch_norm_glu(**args)


def test_residual_shape_is_checked():
    with pytest.raises(ValueError, match="residual must have the shape of x"):
        ops.batch_norm_add(torch.randn(2, 4, 3, 3), torch.randn(2, 4, 3, 2), None, None, None, None,
                           True, 0.1, 1e-5)  # fmt: skip
