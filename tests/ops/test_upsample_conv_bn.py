"""upsample_conv3x3_bn_glu (G's upBlock as one op) against float64 references, on every backend.

The triton backend takes its BatchNorm statistics from the conv kernel's epilogue; these tests
check the result, that the epilogue path really runs (no separate statistics pass), the merge of
many partials, and the op's contract (opcheck, errors). On CPU the kernels run through the
Triton interpreter (tests/conftest.py): tiny odd shapes. The ``gpu`` tests use G's real shapes.
"""

import pytest
import torch
import torch.nn.functional as F
from parity import assert_parity, assert_rel_parity
from triton_aot import ARCHS, SPILL_SLACK, assert_fits, run_aot_script

from attngan_fast import ops
from attngan_fast.ops import _layout
from attngan_fast.ops.triton import batch_norm as triton_bn
from attngan_fast.ops.triton import upsample_conv as triton_conv
from attngan_fast.ops.triton import upsample_conv_bn as triton_fused

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
MOMENTUM, EPS = 0.1, 1e-5


@pytest.fixture(autouse=True)
def _ieee_fp32_conv(monkeypatch):
    """fp32 convolutions in IEEE on both sides (the kernel follows cudnn.allow_tf32): the fused
    op's parity is checked here, TF32 against cuDNN's in test_triton_upsample_conv.py (the
    conv's backward input comes out of BatchNorm, where no test could round it as cuDNN does)."""
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)


def _make(batch, cin, c2, side, dtype, channels_last, affine=True, device=DEVICE):
    """x, conv_weight, weight | None, bias | None, (running_mean, running_var), grad_y."""
    x = (torch.randn(batch, cin, side, side + 1, device=device) + 0.3).to(dtype)
    conv_weight = (torch.randn(c2, cin, 3, 3, device=device) / (3 * cin**0.5)).to(dtype)
    weight = torch.randn(c2, device=device) * 0.3 + 1 if affine else None
    bias = torch.randn(c2, device=device) * 0.2 if affine else None
    running = (torch.randn(c2, device=device) * 0.1, torch.rand(c2, device=device) + 0.5)
    grad_y = torch.randn(batch, c2 // 2, 2 * side, 2 * side + 2, device=device).to(dtype)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
        grad_y = grad_y.to(memory_format=torch.channels_last)
    return x, conv_weight, weight, bias, running, grad_y


def _run(x, conv_weight, weight, bias, running, grad_y, training, backend, to=None):
    """(y, grads of x, conv_weight[, weight, bias], running_mean, running_var) after one call."""

    def prep(t):
        if t is None:
            return None
        t = t.detach().to(to) if to is not None else t.detach().clone()
        return t.requires_grad_(True)

    leaves = [prep(t) for t in (x, conv_weight, weight, bias)]
    rm, rv = (t.detach().clone().to(to or t.dtype) for t in running)
    y = ops.upsample_conv3x3_bn_glu(*leaves, rm, rv, training, MOMENTUM, EPS, backend=backend)
    g = grad_y.detach().to(to) if to is not None else grad_y
    grads = torch.autograd.grad(y, [t for t in leaves if t is not None], g)
    return (y, *grads, rm, rv)


def _check(batch, cin, c2, side, training, dtype=torch.float32, channels_last=False,
           affine=True, backend="triton", grad_y=None, device=DEVICE):  # fmt: skip
    x, cw, w, b, running, gy = _make(batch, cin, c2, side, dtype, channels_last, affine, device)
    args = (x, cw, w, b, running, gy if grad_y is None else grad_y, training)
    got = _run(*args, backend)
    ref = _run(*args, "torch")
    exact = _run(*args, "torch", to=torch.float64)
    # two ops deep, and BN's sums (grad of bias: sum of dz) cancel: as the block chain's slack
    for i, (g, r, e) in enumerate(zip(got, ref, exact)):
        assert g.shape == e.shape, i
        assert_rel_parity(f"output {i}", g, r, e, dtype, slack_eps=16)
    assert got[0].dtype == dtype and got[1].dtype == dtype
    fmt = _layout.memory_format(x)
    assert got[0].is_contiguous(memory_format=fmt) and got[1].is_contiguous(memory_format=fmt)
    if not training:
        assert torch.equal(got[-2], running[0]) and torch.equal(got[-1], running[1])
    return got


def test_reference_is_upsample_conv_then_batch_norm_glu():
    """The torch backend equals the composition of the two public ops' references, and the
    running statistics move as with F.batch_norm."""
    x, cw, w, b, running, _ = _make(3, 5, 6, 4, torch.float64, False, device="cpu")
    rm, rv = (t.clone().double() for t in running)
    y = ops.upsample_conv3x3_bn_glu(x, cw, w, b, rm, rv, True, MOMENTUM, EPS, backend="torch")
    rm2, rv2 = (t.clone().double() for t in running)
    conv_out = F.conv2d(F.interpolate(x, scale_factor=2, mode="nearest"), cw, padding=1)
    want = F.glu(F.batch_norm(conv_out, rm2, rv2, w.double(), b.double(), True, MOMENTUM, EPS), 1)
    torch.testing.assert_close(y, want)
    torch.testing.assert_close(rm, rm2)
    torch.testing.assert_close(rv, rv2)


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("batch", [1, 3])
def test_triton_forward_gradients_and_running_stats(batch, channels_last, training):
    _check(batch, 5, 6, 5, training, channels_last=channels_last)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_triton_half_precision(dtype):
    _check(3, 5, 6, 4, True, dtype=dtype, channels_last=True)
    _check(2, 5, 6, 4, False, dtype=dtype)


def test_triton_wide_channels_and_no_affine():
    """Several GEMM tiles along every axis (the epilogue's partials of many tiles merge)."""
    _check(2, 19, 34, 9, True, channels_last=True)
    _check(2, 7, 10, 3, True, affine=False)


def test_triton_stride_zero_upstream_gradient():
    grad_y = torch.ones(1, 1, 1, 1, device=DEVICE).expand(3, 3, 8, 10)
    _check(3, 5, 6, 4, True, grad_y=grad_y)


def test_triton_statistics_come_from_the_conv_epilogue(spy_kernels):
    """Training: the conv kernel's epilogue replaces BN's statistics pass; eval: no statistics."""
    stats, apply_ = spy_kernels(triton_bn, "_stats_kernel", "_apply_kernel")
    (merge,) = spy_kernels(triton_bn, "_merge_kernel")
    (conv,) = spy_kernels(triton_conv, "_forward_kernel")
    x, cw, w, b, (rm, rv), _ = _make(2, 4, 6, 5, torch.float32, True)
    assert triton_fused.uses_epilogue_stats(x, cw, True)
    ops.upsample_conv3x3_bn_glu(x, cw, w, b, rm, rv, True, MOMENTUM, EPS, backend="triton")
    assert (conv.launches, stats.launches, merge.launches, apply_.launches) == (1, 0, 1, 1)
    ops.upsample_conv3x3_bn_glu(x, cw, w, b, rm, rv, False, MOMENTUM, EPS, backend="triton")
    assert (conv.launches, stats.launches, merge.launches, apply_.launches) == (2, 0, 1, 2)


def test_triton_float64_composes_the_two_ops():
    """float64 (no fp64 tl.dot): the conv takes path (a), BN computes its own statistics."""
    x, cw, w, b, running, gy = _make(2, 3, 4, 3, torch.float64, False)
    assert not triton_fused.uses_epilogue_stats(x, cw, True)
    got = _run(x, cw, w, b, running, gy, True, "triton")
    want = _run(x, cw, w, b, running, gy, True, "torch")
    for g, r in zip(got, want):
        torch.testing.assert_close(g, r)


@pytest.mark.parametrize("splits", [1, 7, 200])
def test_merge_partials_matches_float64_statistics(splits):
    """merge_partials of per-group (mean, M2, count) equals the mean and biased variance of all
    values, also for more partials than one merge launch takes (200 > BLOCK_P)."""
    c = 5
    counts = torch.randint(1, 9, (splits,))
    groups = [torch.randn(int(n), c, dtype=torch.float64) * 3 + 10 for n in counts]
    part = torch.stack([
        torch.stack([gr.mean(0) for gr in groups]),
        torch.stack([((gr - gr.mean(0)) ** 2).sum(0) for gr in groups]),
        counts[:, None].double().expand(splits, c),
    ]).float().to(DEVICE)  # fmt: skip
    mean, var = triton_bn.merge_partials(part)
    values = torch.cat(groups)
    want_var, want_mean = torch.var_mean(values, dim=0, unbiased=False)
    # inputs rounded to fp32 once (|mean| ~ 10): a few units of fp32 rounding
    torch.testing.assert_close(mean.double().cpu(), want_mean, rtol=0, atol=10 * 2**-20)
    torch.testing.assert_close(var.double().cpu(), want_var, rtol=1e-5, atol=0)


def test_epilogue_statistics_equal_those_of_the_stored_output():
    """The statistics the epilogue produced are those of the conv output it stored (bf16: the
    rounded values), to fp32 summation accuracy."""
    x = torch.randn(3, 6, 5, 7).bfloat16().to(memory_format=torch.channels_last)
    cw = (torch.randn(10, 6, 3, 3) / 8).bfloat16()
    conv_out, part = triton_conv.upsample_conv3x3_forward_stats(x, cw)
    mean, var = triton_bn.merge_partials(part)
    want_var, want_mean = torch.var_mean(conv_out.double(), dim=(0, 2, 3), unbiased=False)
    assert_parity("mean", mean, mean, want_mean)
    assert_parity("var", var, var, want_var)
    assert part.shape[0] == 3 and part[2].sum(0).eq(conv_out[:, 0].numel()).all()


@pytest.mark.parametrize("backend", ["torch", "triton"])
@pytest.mark.parametrize("channels_last", [False, True])
def test_opcheck(backend, channels_last):
    x = torch.randn(2, 3, 4, 5)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    x.requires_grad_(True)
    cw = torch.randn(6, 3, 3, 3, requires_grad=True)
    w, b = torch.randn(6, requires_grad=True), torch.randn(6, requires_grad=True)
    op = torch.ops.attngan_fast.upsample_conv3x3_bn_glu.default
    stats = (torch.zeros(6), torch.ones(6))
    for training in (True, False):
        torch.library.opcheck(op, (x, cw, w, b, *stats, training, 1e-5, backend))
    torch.library.opcheck(op, (x, cw, None, None, None, None, True, 1e-5, backend))


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (dict(x=torch.randn(2, 3, 4)), ValueError, "x must have shape B x Cin x H x W"),
        (dict(conv_weight=torch.randn(6, 2, 3, 3)), ValueError, "Cin = 3"),
        (dict(conv_weight=torch.randn(5, 3, 3, 3)), ValueError, "even number of output"),
        (dict(weight=torch.randn(4)), ValueError, "weight must have shape C = 6"),
        (dict(running_var=None), ValueError, "both be tensors or both be None"),
        (
            dict(x=torch.randn(1, 3, 1, 1), training=True, running_mean=None, running_var=None),
            None,
            None,
        ),  # fmt: skip
        (dict(x=torch.randn(2, 3, 4, 4).long()), TypeError, "x must be float32"),
        (dict(conv_weight=torch.randn(6, 3, 3, 3).double()), TypeError, "cast them to one"),
        (dict(training=False, running_mean=None, running_var=None), ValueError, "eval mode"),
    ],
)
def test_bad_inputs_raise_clear_errors(kwargs, error, match):
    args = dict(
        x=torch.randn(2, 3, 4, 4),
        conv_weight=torch.randn(6, 3, 3, 3),
        weight=torch.randn(6),
        bias=torch.randn(6),
        running_mean=torch.zeros(6),
        running_var=torch.ones(6),
        training=True,
        momentum=0.1,
        eps=1e-5,
    )
    args.update(kwargs)
    if error is None:  # 1 x 1 input: 4 values per channel after the upsampling: fine
        ops.upsample_conv3x3_bn_glu(**args)
        return
    with pytest.raises(error, match=match):
        ops.upsample_conv3x3_bn_glu(**args)


def test_cuda_backend_says_it_has_no_kernel():
    with pytest.raises((ops.BackendUnavailableError, ValueError), match="cuda"):
        ops.upsample_conv3x3_bn_glu(
            torch.randn(1, 2, 3, 3), torch.randn(4, 2, 3, 3), None, None, None, None, True, 0.1,
            1e-5, backend="cuda",
        )  # fmt: skip


def test_fullgraph_compile_matches_eager():
    torch._dynamo.reset()
    x = torch.randn(2, 3, 4, 5, requires_grad=True)
    cw = torch.randn(6, 3, 3, 3, requires_grad=True)
    w, b = torch.rand(6, requires_grad=True), torch.randn(6, requires_grad=True)

    def block(x, cw, w, b, rm, rv):
        return ops.upsample_conv3x3_bn_glu(x, cw, w, b, rm, rv, True, 0.1, 1e-5).square().mean()

    stats = [(torch.zeros(6), torch.ones(6)) for _ in range(2)]
    out = torch.compile(block, fullgraph=True)(x, cw, w, b, *stats[0])
    ref = block(x, cw, w, b, *stats[1])
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(stats[0], stats[1])
    leaves = (x, cw, w, b)
    for g, r in zip(torch.autograd.grad(out, leaves), torch.autograd.grad(ref, leaves)):
        torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-6)
    torch._dynamo.reset()


# --- GPU: G's real upBlocks -----------------------------------------------------------------------

# (batch, Cin, conv out = 2 x upBlock out, input side): birds ngf = 32 and coco ngf = 48
GPU_SHAPES = [(20, 512, 512, 4), (20, 64, 64, 32), (20, 64, 64, 64), (20, 64, 64, 128),
              (14, 96, 96, 128)]  # fmt: skip


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("shape", GPU_SHAPES)
def test_gpu_real_shapes(shape, dtype):
    batch, cin, c2, side = shape
    for channels_last in (True, False):
        _check(batch, cin, c2, side, True, dtype=dtype, channels_last=channels_last)
    _check(batch, cin, c2, side, False, dtype=dtype, channels_last=True)


@pytest.mark.gpu
def test_gpu_cuda_graph_capture():
    x, cw, w, b, (rm, rv), _ = _make(20, 64, 64, 32, torch.bfloat16, True)
    ops.upsample_conv3x3_bn_glu(x, cw, w, b, rm, rv, True, MOMENTUM, EPS)  # autotune outside
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        y = ops.upsample_conv3x3_bn_glu(x, cw, w, b, rm, rv, True, MOMENTUM, EPS)
    graph.replay()
    torch.cuda.synchronize()
    want = ops.upsample_conv3x3_bn_glu_reference(x, cw, w, b, None, None, True, MOMENTUM, EPS)
    assert_rel_parity("y", y, want, want.double(), torch.bfloat16, slack_eps=16)


# --- compiled for the GPU without one (Triton's own ptxas) ----------------------------------------

AOT_SCRIPT = r"""
from attngan_fast.ops.triton import upsample_conv as U

for dt in ("bf16", "fp32"):
    for cfg in U._forward_kernel.configs:
        tile = (cfg.kwargs["BLOCK_M"], cfg.kwargs["BLOCK_N"], cfg.kwargs["BLOCK_K"])
        if dt == "fp32" and tile in U.TF32_SKIP:  # pruned by the autotuner
            continue
        consts = dict(cfg.kwargs, PRECISION="tf32", DOT_F32=False, STATS=True, sxc=1, syc=1)
        aot_compile(f"forward+stats {dt} {cfg.kwargs}", U._forward_kernel.fn, consts,
                    {"*": dt, "part_ptr": "fp32"},
                    divisible=("N", "K", "sxb", "sxh", "sxw", "syb", "syh", "syw"),
                    options=autotune_options(cfg))
"""


@pytest.mark.slow
@pytest.mark.parametrize("arch", ARCHS)
def test_epilogue_kernel_compiles_for_gpu_without_spills(arch):
    """The conv kernel with the statistics epilogue, every autotune config (fp32: TF32_SKIP
    pruned), both dtypes: fits an H100 and an A100 block and spills no registers."""
    results = run_aot_script(AOT_SCRIPT, arch)
    assert len(results) == 2 * len(triton_conv.GPU_TILES) - len(triton_conv.TF32_SKIP)
    assert_fits(results, arch)
    for r in results:
        assert r["stack"] <= SPILL_SLACK, r
