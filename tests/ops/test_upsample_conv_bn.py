"""upsample_conv3x3_bn_glu (G's upBlock as one op) on every backend: parity with an independent
float64 oracle (output, gradients, running statistics), layouts, registration, errors,
torch.compile; the triton backend's statistics epilogue (it really runs, its partials merge to
the statistics of the stored conv output) and its kernel compiled for the GPU.

Parity rule (``tests/parity.py``, relative form): a backend's relative error against the float64
oracle (``oracles.py``: the upsampled convolution, then BatchNorm and GLU, from their
definitions) is at most twice that of the same-dtype torch backend (for torch: the reference
backend) plus ``sum_slack_eps`` units of the inputs' dtype: one for bf16 / fp16 inputs (each
output computed in fp32 and rounded once; the conv output in between is rounded to that dtype,
and the float32 statistics and parameter gradients are sums over it, so they too are only as
exact as one rounding to it), log2(N) for fp32 / fp64 inputs (BatchNorm's sums over N values). fp32
convolutions are IEEE on both sides here (TF32 against cuDNN: test_upsample_conv.py; the conv's
backward input comes out of BatchNorm, where no test could round it as cuDNN does).
"""

from __future__ import annotations

import importlib

import pytest
import torch
from inputs import (
    DEVICE,
    backend_dtypes,
    backends,
    kernel_backends,
    leaves,
    parity_reference,
    up_block_inputs,
)
from oracles import EPS, MOMENTUM, exact_batch_norm, exact_upsample_conv
from parity import assert_parity, assert_rel_parity, sum_slack_eps
from triton_aot import ARCHS, SPILL_SLACK, assert_fits, run_aot_script

from attngan_fast import ops
from attngan_fast.ops import _layout, registry

OP = "upsample_conv3x3_bn_glu"
triton_bn = importlib.import_module("attngan_fast.ops.triton.batch_norm")
triton_conv = importlib.import_module("attngan_fast.ops.triton.upsample_conv")
triton_fused = importlib.import_module("attngan_fast.ops.triton.upsample_conv_bn")
DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.float64)


@pytest.fixture(autouse=True)
def _ieee_fp32_conv(monkeypatch):
    """fp32 convolutions in IEEE on both sides (the kernel follows cudnn.allow_tf32)."""
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)


def exact_up_block(x, conv_weight, weight, bias, running, training):
    """float64 (y, running_mean, running_var): BatchNorm + GLU of the upsampled convolution."""
    return exact_batch_norm(
        exact_upsample_conv(x, conv_weight), None, weight, bias, running, training, "glu"
    )


def _run(backend, x, conv_weight, weight, bias, running, grad_y, training, to=None):
    """(y, grads of x, conv_weight[, weight, bias], running_mean, running_var) after one call
    (``backend`` None: the oracle)."""
    inputs = leaves(x, conv_weight, weight, bias, to=to)
    rm, rv = (t.detach().clone().to(to or t.dtype) for t in running)
    if backend is None:
        y, rm, rv = exact_up_block(*inputs, (rm, rv), training)
    else:
        y = ops.upsample_conv3x3_bn_glu(*inputs, rm, rv, training, MOMENTUM, EPS, backend=backend)
    wrt = [t for t in inputs if t is not None]
    return (y.detach(), *torch.autograd.grad(y, wrt, grad_y.to(y.dtype)), rm, rv)


def _check_parity(backend, batch, cin, c2, side, training, dtype=torch.float32,
                  layout="contiguous", affine=True, grad_y=None):  # fmt: skip
    x, cw, w, b, running, gy = up_block_inputs(batch, cin, c2, side, dtype, layout, affine)
    args = (x, cw, w, b, running, gy if grad_y is None else grad_y, training)
    got = _run(backend, *args)
    ref = _run(parity_reference(backend), *args)
    exact = _run(None, *args, to=torch.float64)
    n = batch * (2 * side) * (2 * side + 2)  # values per channel of the conv output
    for i, (g, r, e) in enumerate(zip(got, ref, exact)):
        assert g.shape == e.shape and g.dtype == r.dtype, i
        assert_rel_parity(f"output {i}", g, r, e, dtype, slack_eps=sum_slack_eps(dtype, n))
    assert got[0].dtype == dtype and got[1].dtype == dtype
    fmt = _layout.memory_format(x)
    assert got[0].is_contiguous(memory_format=fmt) and got[1].is_contiguous(memory_format=fmt)
    if not training:  # running statistics untouched
        assert torch.equal(got[-2], running[0]) and torch.equal(got[-1], running[1])
    return got


@pytest.mark.parametrize(("backend", "dtype"), backend_dtypes(OP, DTYPES), indirect=["backend"])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_parity_with_float64(backend, dtype, layout, training):
    _check_parity(backend, 3, 5, 6, 4, training, dtype, layout)


@pytest.mark.parametrize("backend", backends(OP), indirect=True)
def test_batch_of_one(backend):
    _check_parity(backend, 1, 5, 6, 5, True, layout="channels_last")


@pytest.mark.parametrize("backend", backends(OP), indirect=True)
def test_wide_channels_and_no_affine(backend):
    """Several GEMM tiles along every axis (the epilogue's partials of many tiles merge)."""
    _check_parity(backend, 2, 19, 34, 9, True, layout="channels_last")
    _check_parity(backend, 2, 7, 10, 3, True, affine=False)


@pytest.mark.parametrize("backend", backends(OP), indirect=True)
def test_stride_zero_upstream_gradient(backend):
    grad_y = torch.ones(1, 1, 1, 1, device=DEVICE).expand(3, 3, 8, 10)
    _check_parity(backend, 3, 5, 6, 4, True, grad_y=grad_y)


@pytest.mark.parametrize("backend", kernel_backends(OP), indirect=True)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_opcheck(backend, layout):
    x, cw, w, b, _, _ = up_block_inputs(2, 3, 6, 4, layout=layout)
    x, cw, w, b = leaves(x, cw, w, b)
    op = registry.implementation(OP, backend).forward_op
    stats = (torch.zeros(6, device=DEVICE), torch.ones(6, device=DEVICE))
    for training in (True, False):
        torch.library.opcheck(op, (x, cw, w, b, *stats, training, EPS))
    torch.library.opcheck(op, (x, cw, None, None, None, None, True, EPS))


@pytest.mark.parametrize(
    "backend",
    backends(OP, torch.float64, exclude=("triton",) if DEVICE == "cpu" else ()),
    indirect=True,
)  # the interpreter: the float64 parity cases (gradcheck's many calls would take a minute)
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_gradcheck_float64(backend, training):
    x, cw, w, b, running, _ = up_block_inputs(2, 2, 4, 2, torch.float64)

    def block(x, cw, w, b):
        rm, rv = (t.clone() for t in running)
        return ops.upsample_conv3x3_bn_glu(
            x, cw, w, b, rm, rv, training, MOMENTUM, EPS, backend=backend
        )

    assert torch.autograd.gradcheck(block, tuple(leaves(x, cw, w.double(), b.double())))


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


def test_the_cuda_backend_says_it_has_no_kernel():
    with pytest.raises(ops.BackendUnavailableError, match=f"no {OP} implementation"):
        ops.upsample_conv3x3_bn_glu(
            torch.randn(1, 2, 3, 3), torch.randn(4, 2, 3, 3), None, None, None, None, True, 0.1,
            1e-5, backend="cuda",
        )  # fmt: skip


def test_fullgraph_compile_matches_eager():
    torch._dynamo.reset()
    x, cw, w, b, _, _ = up_block_inputs(2, 3, 6, 2, device="cpu")
    x, cw, w, b = leaves(x, cw, w, b)

    def block(x, cw, w, b, rm, rv):
        return ops.upsample_conv3x3_bn_glu(x, cw, w, b, rm, rv, True, 0.1, 1e-5).square().mean()

    stats = [(torch.zeros(6), torch.ones(6)) for _ in range(2)]
    out = torch.compile(block, fullgraph=True)(x, cw, w, b, *stats[0])
    ref = block(x, cw, w, b, *stats[1])
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(stats[0], stats[1])
    wrt = (x, cw, w, b)
    for g, r in zip(torch.autograd.grad(out, wrt), torch.autograd.grad(ref, wrt)):
        torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-6)
    torch._dynamo.reset()


# --- the triton backend's statistics epilogue -------------------------------------------------

needs_triton = pytest.mark.skipif(
    "triton" not in backends(OP), reason="the triton backend cannot run here"
)


@needs_triton
def test_triton_statistics_come_from_the_conv_epilogue(spy_kernels):
    """Training: the conv kernel's epilogue replaces BN's statistics pass; eval: no statistics."""
    stats, apply_ = spy_kernels(triton_bn, "_stats_kernel", "_apply_kernel")
    (merge,) = spy_kernels(triton_bn, "_merge_kernel")
    (conv,) = spy_kernels(triton_conv, "_forward_kernel")
    x, cw, w, b, (rm, rv), _ = up_block_inputs(2, 4, 6, 5, layout="channels_last")
    assert triton_fused.uses_epilogue_stats(x, cw, True)
    ops.upsample_conv3x3_bn_glu(x, cw, w, b, rm, rv, True, MOMENTUM, EPS, backend="triton")
    assert (conv.launches, stats.launches, merge.launches, apply_.launches) == (1, 0, 1, 1)
    ops.upsample_conv3x3_bn_glu(x, cw, w, b, rm, rv, False, MOMENTUM, EPS, backend="triton")
    assert (conv.launches, stats.launches, merge.launches, apply_.launches) == (2, 0, 1, 2)


@needs_triton
def test_triton_float64_composes_the_two_ops(spy_kernels):
    """float64 (no fp64 tl.dot): the conv takes path (a), BN computes its own statistics."""
    (stats,) = spy_kernels(triton_bn, "_stats_kernel")
    x, cw = up_block_inputs(2, 3, 4, 3, torch.float64)[:2]
    assert not triton_fused.uses_epilogue_stats(x, cw, True)
    _check_parity("triton", 2, 3, 4, 3, True, torch.float64)
    assert stats.launches == 1


@needs_triton
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


@needs_triton
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_epilogue_statistics_equal_those_of_the_stored_output(dtype):
    """The statistics the epilogue produced are those of the conv output it stored (bf16: the
    rounded values): as accurate as fp32 statistics computed from that stored output."""
    x = torch.randn(3, 6, 5, 7, device=DEVICE).to(dtype).to(memory_format=torch.channels_last)
    cw = (torch.randn(10, 6, 3, 3, device=DEVICE) / 8).to(dtype)
    conv_out, part = triton_conv.upsample_conv3x3_forward_stats(x, cw)
    mean, var = triton_bn.merge_partials(part)
    ref_var, ref_mean = torch.var_mean(conv_out.float(), dim=(0, 2, 3), unbiased=False)
    want_var, want_mean = torch.var_mean(conv_out.double(), dim=(0, 2, 3), unbiased=False)
    assert mean.dtype == var.dtype == torch.float32
    # fp32 sums of N = 420 values per channel: log2(N) units of fp32 beyond twice torch's error
    slack = sum_slack_eps(torch.float32, conv_out[:, 0].numel())
    assert_parity("mean", mean, ref_mean, want_mean, slack_eps=slack)
    assert_parity("var", var, ref_var, want_var, slack_eps=slack)
    assert part.shape[0] == 3 and part[2].sum(0).eq(conv_out[:, 0].numel()).all()


# --- GPU: G's real upBlocks -----------------------------------------------------------------------

# (batch, Cin, conv out = 2 x upBlock out, input side): birds ngf = 32 and coco ngf = 48
GPU_SHAPES = [(20, 512, 512, 4), (20, 64, 64, 32), (20, 64, 64, 64), (20, 64, 64, 128),
              (14, 96, 96, 128)]  # fmt: skip


@pytest.mark.gpu
@pytest.mark.parametrize(
    ("backend", "dtype"),
    backend_dtypes(OP, (torch.bfloat16, torch.float32), device="cuda", exclude=("reference",)),
    indirect=["backend"],
)
@pytest.mark.parametrize("shape", GPU_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_gpu_real_shapes(backend, dtype, shape):
    batch, cin, c2, side = shape
    for layout in ("channels_last", "contiguous"):
        _check_parity(backend, batch, cin, c2, side, True, dtype, layout)
    _check_parity(backend, batch, cin, c2, side, False, dtype, "channels_last")


@pytest.mark.gpu
def test_gpu_cuda_graph_capture():
    x, cw, w, b, (rm, rv), _ = up_block_inputs(20, 64, 64, 32, torch.bfloat16, "channels_last")
    args = (x, cw, w, b)
    ops.upsample_conv3x3_bn_glu(*args, rm, rv, True, MOMENTUM, EPS)  # autotune outside
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        y = ops.upsample_conv3x3_bn_glu(*args, None, None, True, MOMENTUM, EPS)
    graph.replay()
    torch.cuda.synchronize()
    ref = ops.upsample_conv3x3_bn_glu(*args, None, None, True, MOMENTUM, EPS, backend="torch")
    exact, _, _ = exact_up_block(*args, (rm, rv), True)
    assert_rel_parity("y", y, ref, exact, torch.bfloat16, slack_eps=1.0)


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
def test_triton_epilogue_kernel_compiles_for_gpu_without_spills(arch):
    """The conv kernel with the statistics epilogue, every autotune config (fp32: TF32_SKIP
    pruned), both dtypes: fits an H100 and an A100 block and spills no registers."""
    results = run_aot_script(AOT_SCRIPT, arch)
    assert len(results) == 2 * len(triton_conv.GPU_TILES) - len(triton_conv.TF32_SKIP)
    assert_fits(results, arch)
    for r in results:
        assert r["stack"] <= SPILL_SLACK, r
