"""The cpu backend (``attngan_fast.ops.cpu``): the automatic choice on CPU tensors, and its parity
relative to the torch backend (outputs, every gradient, running statistics; fp32 and bf16, NCHW
and channels-last). The per-op suites also run it like every registered backend."""

import pytest
import torch
import torch.nn.functional as F

from attngan_fast import ops
from attngan_fast.ops import cpu, cpu_ext, registry
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


# --- the CPU extension's fused BatchNorm + GLU (attngan_fast/ops/cpu_ext.py) ------------------

needs_cpu_ext = pytest.mark.skipif(
    cpu_ext.why_unavailable() is not None,
    reason=f"the CPU extension cannot be built here: {cpu_ext.why_unavailable()}",
)

# (shape, what it covers): half widths compiled in (4, 8) and read at run time (7, 65, 6); one
# pixel row per tile (B x 2C matrices, 2C > 2048 values); a map of 16 384 pixel rows, which the
# kernels split into two threads' chunks of 64 tiles, folded twice from float32 into float64.
FUSED_SHAPES = [
    (3, 8, 7, 5),
    (2, 14, 5, 3),
    (2, 130, 3, 2),
    (1, 16, 1, 3),
    (5, 12),
    (3, 4100),
    (4, 16, 64, 64),
]


def test_cpu_extension_builds_wherever_a_compiler_is_found():
    """Where the extension can be built it is (a broken build would otherwise fall back to ATen
    silently); the module name carries the CPU's instruction-set hash."""
    if cpu_ext.why_unavailable() is not None:
        pytest.skip(cpu_ext.why_unavailable())
    assert cpu_ext.extension() is not None, cpu_ext.status()
    status = cpu_ext.status()
    assert status["loaded"] and status["unavailable"] is None
    assert status["name"].startswith("attngan_fast_cpu_")


@needs_cpu_ext
@pytest.mark.parametrize("shape", FUSED_SHAPES, ids=str)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("training", [True, False])
def test_fused_batch_norm_glu_parity(shape, dtype, training):
    """The extension's BatchNorm + GLU (the cpu backend on channels-last maps and B x 2C
    matrices) against the torch backend in the same dtype, float64 as the oracle: y, grad_x,
    the parameters' gradients and the running statistics."""
    x, weight, bias, running = _bn_inputs(shape, seed=len(shape) + shape[1])
    assert cpu._fused_glu_extension(_layout(x.to(dtype), True)) is not None
    args = ("glu", x, None, weight, bias, running, training)
    fast = _run_bn(_on("cpu")["glu"], *args, dtype, True)
    ref = _run_bn(_on("torch")["glu"], *args, dtype, False)
    exact = _run_bn(_on("reference")["glu"], *args, torch.float64, False)
    if len(shape) == 4:
        assert fast[0].is_contiguous(memory_format=CL)
        assert fast[1][0].is_contiguous(memory_format=CL)
    assert fast[0].dtype == fast[1][0].dtype == dtype
    assert_rel_parity("y", fast[0], ref[0], exact[0], dtype)
    assert_rel_parity("grad x", fast[1][0], ref[1][0], exact[1][0], dtype)
    values = x.numel() // shape[1]
    for i in (1, 2):
        slack = sum_slack_eps(dtype, values)
        assert_rel_parity(f"grad {i}", fast[1][i], ref[1][i], exact[1][i], dtype, slack_eps=slack)
    for sf, sr, se in zip(fast[2], ref[2], exact[2]):
        assert_rel_parity("running stats", sf, sr, se, torch.float32)


@needs_cpu_ext
def test_fused_batch_norm_glu_without_affine_and_with_odd_gradients():
    """No weight / bias; the gradient of y arriving NCHW-contiguous, and stride-0 (expanded)."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 10, 4, 3, generator=g, dtype=torch.float64)
    xd = x.clone().requires_grad_()
    yd = F.glu(F.batch_norm(xd, None, None, training=True, eps=1e-5), 1)
    for grad in (
        torch.randn(2, 5, 4, 3, generator=g, dtype=torch.float64),
        torch.ones(1).expand(2, 5, 4, 3),
    ):
        (want,) = torch.autograd.grad(yd, xd, grad.double(), retain_graph=True)
        xf = x.float().contiguous(memory_format=CL).requires_grad_()
        y = ops.batch_norm_glu(xf, None, None, None, None, True, 0.1, 1e-5, backend="cpu")
        (got,) = torch.autograd.grad(y, xf, grad.float())
        torch.testing.assert_close(y.double(), yd.detach(), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-5)


@needs_cpu_ext
def test_fused_batch_norm_glu_variance_with_a_large_mean():
    """|mean| / std = 1e4: the statistics are summed around a shift (one row of x), not as
    E[x^2] - E[x]^2 of raw values, which would lose every digit of the variance in float32."""
    g = torch.Generator().manual_seed(4)
    x = (torch.randn(8, 6, 9, 9, generator=g, dtype=torch.float64) * 0.01 + 100.0).float()
    xd = x.double()
    y, mean, var = cpu.batch_norm_act_forward(
        x.contiguous(memory_format=CL), None, None, None, None, None, True, 1e-5, "glu"
    )
    torch.testing.assert_close(var.double(), xd.var((0, 2, 3), unbiased=False), rtol=1e-4, atol=0)
    want = F.glu(F.batch_norm(xd, None, None, training=True, eps=1e-5), 1)
    torch.testing.assert_close(y.double(), want, rtol=0, atol=1e-3)


@needs_cpu_ext
def test_cpu_extension_rejects_bad_inputs_clearly():
    ext = cpu_ext.extension()
    w = torch.ones(6)
    x = torch.randn(4, 6)
    with pytest.raises(ValueError, match="P x 2C"):
        ext.batch_norm_glu_rows_forward(
            torch.randn(4, 5), torch.ones(5), torch.ones(5), w, w, True, 1e-5
        )
    with pytest.raises(TypeError, match="float32, bfloat16 or float16"):
        ext.batch_norm_glu_rows_forward(x.int(), w, w, w, w, True, 1e-5)
    with pytest.raises(ValueError, match="contiguous"):
        ext.batch_norm_glu_rows_forward(torch.randn(6, 4).t(), w, w, w, w, True, 1e-5)
    with pytest.raises(ValueError, match="weight must have 6"):
        ext.batch_norm_glu_rows_forward(x, torch.ones(3), w, w, w, True, 1e-5)
    with pytest.raises(ValueError, match="grad_y"):
        ext.batch_norm_glu_rows_backward(torch.randn(4, 6), x, w, w, w, w, True, 1e-5)
    with pytest.raises(TypeError, match="grad_y must have x's dtype"):
        ext.batch_norm_glu_rows_backward(torch.randn(4, 3).bfloat16(), x, w, w, w, w, True, 1e-5)


def test_cpu_extension_switched_off_falls_back_to_aten(monkeypatch):
    """ATTNGAN_FAST_CPU_EXTENSION=0: no build, the reason reported, ATen's kernels give the same
    numbers as the torch backend."""
    monkeypatch.setenv(cpu_ext.ENV, "0")
    monkeypatch.setattr(cpu_ext, "_state", {"tried": False, "module": None, "why": None})
    x = torch.randn(2, 8, 5, 3).contiguous(memory_format=CL)
    assert cpu._fused_glu_extension(x) is None
    assert cpu_ext.status() == {
        **cpu_ext.status(),
        "loaded": False,
        "unavailable": f"{cpu_ext.ENV}=0",
    }
    got = ops.batch_norm_glu(x, None, None, None, None, True, 0.1, 1e-5, backend="cpu")
    want = ops.batch_norm_glu(x, None, None, None, None, True, 0.1, 1e-5, backend="torch")
    torch.testing.assert_close(got, want)


def test_cpu_extension_build_failure_falls_back_with_a_warning(monkeypatch, caplog):
    """A failing compiler is not fatal: one warning naming the failure (after the one that
    announces the build), ATen's kernels after."""
    import torch.utils.cpp_extension as cpp

    def broken(**kwargs):
        raise RuntimeError("Error building extension 'x': c++: fatal error")

    monkeypatch.setattr(cpu_ext, "_state", {"tried": False, "module": None, "why": None})
    monkeypatch.setattr(cpu_ext, "why_unavailable", lambda: None)
    monkeypatch.setattr(cpp, "load", broken)
    with caplog.at_level("WARNING", logger="attngan_fast"):
        assert cpu_ext.extension() is None
        assert cpu_ext.extension() is None
    failures = [r for r in caplog.records if "build failed" in r.getMessage()]
    assert len(failures) == 1 and failures[0].levelname == "WARNING"
    assert "fatal error" in cpu_ext.status()["unavailable"]
