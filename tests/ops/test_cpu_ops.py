"""The CPU implementations (``attngan_fast.ops.cpu``) against the float64 reference: outputs,
every gradient and the running statistics, fp32 and bf16, NCHW and channels-last."""

import pytest
import torch
import torch.nn.functional as F

from attngan_fast import ops
from attngan_fast.ops import batch_norm as bn_module
from attngan_fast.ops import cpu
from tests.parity import assert_rel_parity

CL = torch.channels_last
DTYPES = [torch.float32, torch.bfloat16]


def _layout(t, channels_last):
    return t.contiguous(memory_format=CL) if channels_last and t.dim() == 4 else t.contiguous()


def _bn_inputs(shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    c = shape[1]
    x = torch.randn(*shape, generator=g, dtype=torch.float64) * 1.5 + 0.5
    weight = 1 + 0.2 * torch.randn(c, generator=g, dtype=torch.float64)
    bias = 0.2 * torch.randn(c, generator=g, dtype=torch.float64)
    running = (torch.randn(c, generator=g, dtype=torch.float64), torch.rand(c, generator=g) + 0.5)
    return x, weight, bias, running


def _run_bn(fn, mode, x, residual, weight, bias, running, training, dtype, channels_last):
    """Output, grads of (x, residual, weight, bias) and the running stats after one call."""
    x = _layout(x.to(dtype), channels_last).requires_grad_()
    w = weight.to(torch.float64 if dtype == torch.float64 else torch.float32).requires_grad_()
    b = bias.to(w.dtype).requires_grad_()
    rm, rv = (r.to(w.dtype).clone() for r in running)
    args = (w, b, rm, rv, training, 0.1, 1e-5)
    if mode == "glu":
        y = fn(x, *args)
        inputs = (x, w, b)
    else:
        res = _layout(residual.to(dtype), channels_last).requires_grad_()
        y = fn(x, res, *args)
        inputs = (x, res, w, b)
    g = torch.Generator().manual_seed(1)
    grad = torch.randn(y.shape, generator=g, dtype=torch.float64).to(dtype)
    grads = torch.autograd.grad(y, inputs, grad)
    return y, grads, (rm, rv)


PUBLIC = {"glu": (cpu.batch_norm_glu, ops.batch_norm_glu_reference),
          "add": (cpu.batch_norm_add, ops.batch_norm_add_reference)}  # fmt: skip


@pytest.mark.parametrize("mode", ["glu", "add"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_public_form_parity(mode, dtype, channels_last, training):
    shape = (3, 8, 7, 5)
    x, weight, bias, running = _bn_inputs(shape)
    residual = torch.randn(shape, dtype=torch.float64)
    fast_fn, ref_fn = PUBLIC[mode]
    fast = _run_bn(
        fast_fn, mode, x, residual, weight, bias, running, training, dtype, channels_last
    )
    ref = _run_bn(ref_fn, mode, x, residual, weight, bias, running, training, dtype, False)
    exact = _run_bn(
        ref_fn, mode, x, residual, weight, bias, running, training, torch.float64, False
    )
    if channels_last:
        assert fast[0].is_contiguous(memory_format=CL)
        assert fast[1][0].is_contiguous(memory_format=CL)
    assert fast[0].dtype == dtype
    assert_rel_parity("y", fast[0], ref[0], exact[0], dtype)
    for i, (gf, gr, ge) in enumerate(zip(fast[1], ref[1], exact[1])):
        assert gf.dtype == gr.dtype
        assert_rel_parity(f"grad {i}", gf, gr, ge, dtype)
    for sf, sr, se in zip(fast[2], ref[2], exact[2]):
        assert_rel_parity("running stats", sf, sr, se, torch.float32)


class _Contract(torch.autograd.Function):
    """A backend module's batch_norm_act forward / backward as one differentiable function."""

    @staticmethod
    def forward(ctx, impl, x, residual, weight, bias, rm, rv, training, eps, mode):
        y, mean, var = impl.batch_norm_act_forward(
            x, residual, weight, bias, rm, rv, training, eps, mode
        )
        stats = (mean, var) if training else (rm, rv)
        ctx.save_for_backward(x, weight, bias, *stats)
        ctx.impl, ctx.training, ctx.eps, ctx.mode = impl, training, eps, mode
        return y, mean, var

    @staticmethod
    def backward(ctx, grad_y, _gm, _gv):
        x, weight, bias, mean, var = ctx.saved_tensors
        gx, gw, gb = ctx.impl.batch_norm_act_backward(
            grad_y, x, weight, bias, mean, var, ctx.training, ctx.eps, ctx.mode
        )
        grad_res = grad_y if ctx.needs_input_grad[2] else None
        return None, gx, grad_res, gw, gb, None, None, None, None, None


@pytest.mark.parametrize("mode", ["glu", "add"])
@pytest.mark.parametrize("dtype", [*DTYPES, torch.float64])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_contract_parity(mode, dtype, channels_last, training):
    """The backend functions of ``ops.cpu`` against the torch backend's, float64 as the oracle."""
    shape = (2, 6, 5, 3)
    x, weight, bias, running = _bn_inputs(shape, seed=3)
    residual = torch.randn(shape, dtype=torch.float64)

    def run(impl, dt, cl):
        def fn(xx, *rest):
            if mode == "glu":
                w, b, rm, rv, tr, _m, eps = rest
                res = None
            else:
                res, w, b, rm, rv, tr, _m, eps = rest
            y, mean, var = _Contract.apply(impl, xx, res, w, b, rm, rv, tr, eps, mode)
            if tr:
                n = xx.numel() // xx.shape[1]
                bn_module.update_running_stats(rm, rv, mean, var, n, 0.1)
            return y

        return _run_bn(fn, mode, x, residual, weight, bias, running, training, dt, cl)

    fast, ref = run(cpu, dtype, channels_last), run(bn_module, dtype, False)
    exact = run(bn_module, torch.float64, False)
    slack = 64.0 if dtype == torch.float64 else 4.0  # float64: the oracle is the reference itself
    assert_rel_parity("y", fast[0], ref[0], exact[0], dtype, slack)
    for i, (gf, gr, ge) in enumerate(zip(fast[1], ref[1], exact[1])):
        assert_rel_parity(f"grad {i}", gf, gr, ge, dtype, slack)
    for sf, sr, se in zip(fast[2], ref[2], exact[2]):
        assert_rel_parity("running stats", sf, sr, se, torch.float32)


@pytest.mark.parametrize("channels_last", [False, True])
def test_glu_gradcheck(channels_last):
    z = _layout(torch.randn(2, 6, 4, 3, dtype=torch.float64), channels_last).requires_grad_()
    assert torch.autograd.gradcheck(cpu.glu, (z,))
    torch.testing.assert_close(cpu.glu(z), F.glu(z, dim=1))


@pytest.mark.parametrize("channels_last", [False, True])
def test_upsample_conv_and_block_under_bf16_autocast(channels_last):
    g = torch.Generator().manual_seed(5)
    x = _layout(torch.randn(2, 4, 5, 6, generator=g), channels_last)
    w = torch.randn(6, 4, 3, 3, generator=g)
    exact = ops.upsample_conv3x3_reference(x.double(), w.double())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fast = cpu.upsample_conv3x3(x, w)
        ref = ops.upsample_conv3x3(x, w)
    assert fast.dtype == torch.bfloat16
    assert_rel_parity("upsample_conv3x3", fast, ref, exact, torch.bfloat16)


@pytest.mark.parametrize("dtype", DTYPES)
def test_word_attention_parity(dtype):
    g = torch.Generator().manual_seed(2)
    q = torch.randn(3, 8, 20, generator=g, dtype=torch.float64)
    s = torch.randn(3, 8, 6, generator=g, dtype=torch.float64)
    mask = torch.zeros(3, 6, dtype=torch.bool)
    mask[1, 4:] = True
    mask[2, :] = True  # no valid word: zeros, not NaN

    def run(fn, dt):
        qq, ss = q.to(dt).requires_grad_(), s.to(dt).requires_grad_()
        ctx, attn = fn(qq, ss, mask, need_attn=True)
        grads = torch.autograd.grad(ctx.sum() + attn.float().pow(2).sum(), (qq, ss))
        return ctx, attn, grads

    fast, ref = run(cpu.word_attention, dtype), run(ops.word_attention, dtype)
    exact = run(ops.word_attention, torch.float64)
    assert torch.isfinite(fast[0]).all()
    assert (fast[0][2] == 0).all()
    outputs = zip(("context", "attn", "grad q", "grad s"), *(
        (r[0], r[1], *r[2]) for r in (fast, ref, exact)
    ))  # fmt: skip
    for name, f, r, e in outputs:
        assert_rel_parity(name, f, r, e, dtype)


def test_cpu_ops_routes_and_restores_the_public_ops():
    before = ops.batch_norm_glu
    with cpu.cpu_ops():
        assert ops.batch_norm_glu is cpu.batch_norm_glu
        assert ops.word_attention is cpu.word_attention
    assert ops.batch_norm_glu is before
