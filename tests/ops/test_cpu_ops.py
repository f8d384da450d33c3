"""The cpu backend (``attngan_fast.ops.cpu``): the automatic choice on CPU tensors, and its parity
relative to the torch backend (outputs, every gradient, running statistics; fp32 and bf16, NCHW
and channels-last). The per-op suites also run it like every registered backend."""

import pytest
import torch
import torch.nn.functional as F

from attngan_fast import ops
from attngan_fast.ops import cpu, registry
from tests.parity import assert_rel_parity, sum_slack_eps

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


def _on(backend):
    """The public BatchNorm ops on ``backend``, by mode."""
    return {
        "glu": lambda *args: ops.batch_norm_glu(*args, backend=backend),
        "add": lambda *args: ops.batch_norm_add(*args, backend=backend),
    }


@pytest.mark.parametrize("mode", ["glu", "add"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_parity_relative_to_the_torch_backend(mode, dtype, channels_last, training):
    """The cpu backend against the torch backend (same dtype, NCHW), float64 as the oracle."""
    shape = (3, 8, 7, 5)
    x, weight, bias, running = _bn_inputs(shape)
    residual = torch.randn(shape, dtype=torch.float64)
    args = (mode, x, residual, weight, bias, running, training)
    fast = _run_bn(_on("cpu")[mode], *args, dtype, channels_last)
    ref = _run_bn(_on("torch")[mode], *args, dtype, False)
    exact = _run_bn(_on("reference")[mode], *args, torch.float64, False)
    if channels_last:
        assert fast[0].is_contiguous(memory_format=CL)
        assert fast[1][0].is_contiguous(memory_format=CL)
    assert fast[0].dtype == dtype
    assert_rel_parity("y", fast[0], ref[0], exact[0], dtype)
    # The weight and bias gradients (the last two) sum B H W terms per channel: in one thread
    # ATen's channels-last backward sums them in one running float32 sum (7.7e-7 relative error
    # against the torch backend's 1.1e-7 on this shape), hence the summation slack there.
    n_params = 2
    for i, (gf, gr, ge) in enumerate(zip(fast[1], ref[1], exact[1])):
        assert gf.dtype == gr.dtype
        summed = i >= len(fast[1]) - n_params
        slack = sum_slack_eps(dtype, shape[0] * shape[2] * shape[3]) if summed else 4.0
        assert_rel_parity(f"grad {i}", gf, gr, ge, dtype, slack_eps=slack)
    for sf, sr, se in zip(fast[2], ref[2], exact[2]):
        assert_rel_parity("running stats", sf, sr, se, torch.float32)


@pytest.mark.parametrize("channels_last", [False, True])
def test_channels_last_glu_backward_gradcheck(channels_last):
    """The cpu backend's BatchNorm + GLU backward (its own GLU backward in channels-last)."""
    x = _layout(torch.randn(2, 6, 4, 3, dtype=torch.float64), channels_last).requires_grad_()
    w = torch.rand(6, dtype=torch.float64).add_(0.5).requires_grad_()
    b = torch.randn(6, dtype=torch.float64).requires_grad_()

    def fn(x, w, b):
        return ops.batch_norm_glu(x, w, b, None, None, True, 0.1, 1e-5, backend="cpu")

    assert torch.autograd.gradcheck(fn, (x, w, b))


@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "grad_nchw"])
def test_glu_backward_is_the_glu_gradient(layout):
    z = torch.randn(2, 6, 4, 3, dtype=torch.float64)
    if layout != "contiguous":
        z = z.contiguous(memory_format=CL)
    z.requires_grad_()
    grad_y = torch.randn(2, 3, 4, 3, dtype=torch.float64)
    if layout == "channels_last":
        grad_y = grad_y.contiguous(memory_format=CL)
    (want,) = torch.autograd.grad(F.glu(z, dim=1), z, grad_y)
    got = cpu.glu_backward(grad_y, z.detach())
    fmt = torch.contiguous_format if layout == "contiguous" else CL
    assert got.is_contiguous(memory_format=fmt)
    torch.testing.assert_close(got, want)


@pytest.mark.parametrize("channels_last", [False, True])
def test_upsample_conv_and_block_under_bf16_autocast(channels_last):
    g = torch.Generator().manual_seed(5)
    x = _layout(torch.randn(2, 4, 5, 6, generator=g), channels_last)
    w = torch.randn(6, 4, 3, 3, generator=g)
    exact = ops.upsample_conv3x3_reference(x.double(), w.double())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fast = ops.upsample_conv3x3(x, w, backend="cpu")
        ref = ops.upsample_conv3x3(x, w, backend="torch")
    assert fast.dtype == torch.bfloat16
    assert_rel_parity("upsample_conv3x3", fast, ref, exact, torch.bfloat16)


CPU_OPS = (
    "batch_norm_act",
    "upsample_conv3x3",
    "upsample_conv3x3_bn_glu",
    "word_attention",
    "damsm_word_similarity",
)


@pytest.mark.parametrize("op", CPU_OPS)
def test_cpu_backend_is_the_automatic_choice_on_cpu_tensors_only(op, monkeypatch):
    monkeypatch.delenv("ATTNGAN_FAST_BACKEND", raising=False)
    assert ops.resolve_backend(op, "cpu") == "cpu"
    assert ops.resolve_backend(op, "cpu", torch.bfloat16) == "cpu"
    with ops.use_backend("torch"):
        assert ops.resolve_backend(op, "cpu") == "torch"  # the reference backends stay a name away
    impl = registry.implementation(op, "cpu")
    why = impl.supports(registry.typical_call("cuda"))
    assert why is not None and "CPU tensors" in why
    assert "cpu" not in ops.available_backends(op, "cuda")


def test_damsm_similarity_forward_is_the_torch_backends_numbers():
    """The cpu composite runs the torch backend's forward (the float32 reference) and differs only
    in how its backward is formed; under bf16 autocast it stays float32 inside."""
    torch.manual_seed(0)
    v, e = torch.randn(5, 8, 9).bfloat16(), torch.randn(5, 8, 6).bfloat16()
    lens = torch.tensor([6, 3, 1, 6, 2])
    got = cpu.damsm_word_similarity_cpu(v, e, lens, 4.0, 5.0)
    call = registry.Call(v.device, v.dtype, {"img_local": tuple(v.shape), "words": tuple(e.shape)})
    want = registry.choose("damsm_word_similarity", call, "torch").forward_op(v, e, lens, 4.0, 5.0)
    assert got.dtype == want.dtype == torch.float32 and torch.equal(got, want)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(cpu.damsm_word_similarity_cpu(v, e, lens, 4.0, 5.0), want)


def test_upblock_on_cpu_runs_the_cpu_batch_norm(monkeypatch):
    """upsample_conv3x3_bn_glu on the cpu backend reaches the cpu BatchNorm kernels."""
    calls = []
    real = cpu.batch_norm_act_forward
    monkeypatch.setattr(cpu, "batch_norm_act_forward", lambda *a: calls.append(1) or real(*a))
    registry.implementation("batch_norm_act", "cpu").forward = cpu.batch_norm_act_forward
    try:
        x, w = torch.randn(2, 3, 4, 4), torch.randn(6, 3, 3, 3)
        y = ops.upsample_conv3x3_bn_glu(x, w, None, None, None, None, True, 0.1, 1e-5)
    finally:
        registry.implementation("batch_norm_act", "cpu").forward = real
    assert y.shape == (2, 3, 8, 8) and calls == [1]
