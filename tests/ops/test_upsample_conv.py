"""upsample_conv3x3 on every backend: parity with an independent float64 oracle, layouts, which
gradients are computed, registration, errors; the Triton kernels' structure (no fallback, the
float64 path, TF32 rounding, autotune configs compiled for the GPU).

Parity rule (``tests/parity.py``, relative form: a convolution's outputs are large tensors of
similar entries): a backend's relative error against the float64 oracle is at most twice that of
the same-dtype torch backend (for torch: the reference backend) plus 4 units of the dtype, for y
and the gradients of x and weight. The oracle is written here from the definition (each pixel
repeated 2 x 2, zero padding, the nine taps summed), without ``F.interpolate`` or ``F.conv2d``.
"""

from __future__ import annotations

import importlib

import gpu_numerics
import numpy as np
import pytest
import torch
import torch.nn.functional as F
import triton
import triton.language as tl
from inputs import (
    DEVICE,
    backend_dtypes,
    backends,
    conv_inputs,
    kernel_backends,
    leaves,
    parity_reference,
)
from oracles import exact_upsample_conv
from parity import assert_rel_parity
from triton_aot import ARCHS, SPILL_SLACK, assert_fits, run_aot_script

from attngan_fast import ops
from attngan_fast.ops import _layout, phase_conv, registry

OP = "upsample_conv3x3"
torch_backend = importlib.import_module("attngan_fast.ops.upsample_conv")
tri = importlib.import_module("attngan_fast.ops.triton.upsample_conv")
DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.float64)


def _run(backend, x, weight, grad_y, to=None):
    """(y, grad_x, grad_weight) of one call (``backend`` None: the oracle)."""
    x, weight = leaves(x, weight, to=to)
    if backend is None:
        y = exact_upsample_conv(x, weight)
    else:
        y = ops.upsample_conv3x3(x, weight, backend=backend)
    return (y.detach(), *torch.autograd.grad(y, (x, weight), grad_y.to(y.dtype)))


def _check_parity(backend, x, weight, grad_y):
    got = _run(backend, x, weight, grad_y)
    # a TF32 kernel's reference is cuDNN's TF32 conv: the same operands rounded to TF32 as
    # cuDNN rounds them (the CPU conv is IEEE; on a GPU cuDNN rounds them itself)
    operands = gpu_numerics.cudnn_operands(x, weight, grad_y) if backend == "triton" else (
        x, weight, grad_y)  # fmt: skip
    ref = _run(parity_reference(backend), *operands)
    exact = _run(None, x, weight, grad_y, to=torch.float64)
    for name, g, r, e in zip(("y", "grad_x", "grad_weight"), got, ref, exact):
        assert g.dtype == x.dtype and g.shape == e.shape, name
        assert_rel_parity(name, g, r, e, x.dtype)
    fmt = _layout.memory_format(x)
    assert got[0].is_contiguous(memory_format=fmt) and got[1].is_contiguous(memory_format=fmt)
    return got


@pytest.mark.parametrize(("backend", "dtype"), backend_dtypes(OP, DTYPES), indirect=["backend"])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("batch", [1, 3])
def test_parity_with_float64(backend, dtype, layout, batch):
    _check_parity(backend, *conv_inputs(batch, 5, 6, 5, 3, dtype, layout))


@pytest.mark.parametrize("backend", backends(OP), indirect=True)
def test_wide_channels_span_several_tiles(backend):
    """More than one tile along every GEMM axis (M pixels, N and K channels) and a K remainder."""
    _check_parity(backend, *conv_inputs(2, 37, 20, 9, 5))


@pytest.mark.parametrize("backend", backends(OP), indirect=True)
def test_stride_zero_upstream_gradient(backend):
    x, weight, _ = conv_inputs(3, 5, 7, 3, 4)
    grad_y = torch.ones(1, 1, 1, 1, device=DEVICE).expand(3, 7, 6, 8)  # stride 0 everywhere
    _check_parity(backend, x, weight, grad_y)


@pytest.mark.parametrize("backend", backends(OP), indirect=True)
@pytest.mark.parametrize("needed", ["x", "weight"])
def test_only_the_needed_gradient_is_computed(backend, needed, monkeypatch):
    """The other gradient is not asked of the backward kernel, and the one asked is right."""
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)  # IEEE: against float64
    impl = registry.implementation(OP, backend)
    asked = []
    if impl.backward is not None:
        backward = impl.backward

        def spy(grad_y, x, weight, need_x, need_weight):
            asked.append((need_x, need_weight))
            return backward(grad_y, x, weight, need_x, need_weight)

        monkeypatch.setattr(impl, "backward", spy)
    x, weight, grad_y = conv_inputs(2, 3, 6, 4, 5)
    leaf = {"x": x, "weight": weight}[needed].clone().requires_grad_()
    args = (leaf, weight) if needed == "x" else (x, leaf)
    (got,) = torch.autograd.grad(ops.upsample_conv3x3(*args, backend=backend), leaf, grad_y)
    x64, w64 = leaves(x, weight, to=torch.float64)
    want = torch.autograd.grad(exact_upsample_conv(x64, w64), {"x": x64, "weight": w64}[needed],
                               grad_y.double())[0]  # fmt: skip
    torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-4)
    if impl.backward is not None:
        assert asked == [(needed == "x", needed == "weight")]


@pytest.mark.parametrize("backend", kernel_backends(OP), indirect=True)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_opcheck(backend, layout):
    x, weight, _ = conv_inputs(2, 3, 6, 4, 5, layout=layout)
    x, weight = leaves(x, weight)
    torch.library.opcheck(registry.implementation(OP, backend).forward_op, (x, weight))


@pytest.mark.parametrize("backend", backends(OP, torch.float64), indirect=True)
def test_gradcheck_float64(backend):
    x, weight, _ = conv_inputs(1, 2, 3, 3, 2, torch.float64)
    fn = lambda x, w: ops.upsample_conv3x3(x, w, backend=backend)  # noqa: E731
    assert torch.autograd.gradcheck(fn, tuple(leaves(x, weight)))


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
        (torch.randn(1, 3, 0, 4), torch.randn(2, 3, 3, 3), ValueError, "x must not be empty"),
    ],
    ids=["x-3d", "cin", "kernel", "dtypes", "int", "empty"],
)
def test_bad_inputs_raise_clear_errors(x, weight, error, text):
    with pytest.raises(error, match=text):
        ops.upsample_conv3x3(x, weight)


# --- the Triton kernels ---------------------------------------------------------------------------

needs_triton = pytest.mark.skipif(
    "triton" not in backends(OP), reason="the triton backend cannot run here"
)


@needs_triton
def test_the_triton_kernels_run_not_a_fallback(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("fell back")

    for module, name in (
        (phase_conv, "upsample_conv3x3_phase_forward"),
        (phase_conv, "upsample_conv3x3_phase_backward"),
        (torch_backend, "upsample_conv3x3_forward"),
        (torch_backend, "upsample_conv3x3_backward"),
        (F, "conv2d"),
    ):
        monkeypatch.setattr(module, name, fail)
    x, weight = leaves(*conv_inputs(2, 3, 4, 4, 5)[:2])
    assert tri.uses_triton_kernels(x, weight)
    ops.upsample_conv3x3(x, weight, backend="triton").sum().backward()
    assert x.grad is not None and weight.grad is not None


@needs_triton
def test_triton_float64_takes_path_a(monkeypatch):
    calls = []
    forward = phase_conv.upsample_conv3x3_phase_forward
    monkeypatch.setattr(phase_conv, "upsample_conv3x3_phase_forward",
                        lambda *a: calls.append(a) or forward(*a))  # fmt: skip
    x, weight, _ = conv_inputs(2, 3, 4, 4, 5, torch.float64)
    y = ops.upsample_conv3x3(x, weight, backend="triton")
    assert len(calls) == 1
    torch.testing.assert_close(y, exact_upsample_conv(x, weight))


@triton.jit
def _round_kernel(x_ptr, out_ptr):
    offs = tl.arange(0, 1024)
    tl.store(out_ptr + offs, tri._round_tf32(tl.load(x_ptr + offs)))


@needs_triton
def test_triton_tf32_rounding_is_to_nearest_ties_away():
    """The fp32 operands of a TF32 product are rounded as cuDNN's cvt.rna, not truncated."""
    x = torch.randn(1024, device=DEVICE) * 1e3
    x[:4] = torch.tensor([1 + 2**-11, -(1 + 2**-11), float("inf"), 3.0])
    out = torch.empty_like(x)
    _round_kernel[(1,)](x, out)
    np.testing.assert_array_equal(out.cpu().numpy(), gpu_numerics.tf32_round(x.cpu().numpy()))
    assert out[0] == 1 + 2**-10 and out[1] == -(1 + 2**-10) and out[3] == 3.0


def test_triton_tf32_skip_tiles_are_pruned_for_fp32_only():
    configs = [
        triton.Config({"BLOCK_M": m, "BLOCK_N": n, "BLOCK_K": k}, num_warps=w, num_stages=s)
        for m, n, k, w, s in tri.GPU_TILES
    ]

    def kept(dtype, precision):
        args = {"x_ptr": torch.empty(1, dtype=dtype), "N": 256, "K": 256}
        picked = tri._prune(configs, args, PRECISION=precision)
        return {(c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"], c.kwargs["BLOCK_K"]) for c in picked}

    all_tiles = {t[:3] for t in tri.GPU_TILES}
    assert kept(torch.float32, "tf32") == all_tiles - tri.TF32_SKIP
    assert kept(torch.float32, "ieee") == all_tiles
    assert kept(torch.bfloat16, "tf32") == all_tiles


# --- GPU: G's real shapes -------------------------------------------------------------------------

# (batch, Cin, conv out channels = 2 x upBlock out, H = W of the input)
# INIT_STAGE_G upsample1..4, then NEXT_STAGE_G's upBlock(2 ngf, ngf) at 64^2 and 128^2
BIRDS = [(20, 512, 512, 4), (20, 256, 256, 8), (20, 128, 128, 16), (20, 64, 64, 32),
         (20, 64, 64, 64), (20, 64, 64, 128)]  # fmt: skip
COCO = [(14, 768, 768, 4), (14, 384, 384, 8), (14, 192, 192, 16), (14, 96, 96, 32),
        (14, 96, 96, 64), (14, 96, 96, 128)]  # fmt: skip


@pytest.mark.gpu
@pytest.mark.parametrize(
    ("backend", "dtype"),
    backend_dtypes(
        OP, (torch.bfloat16, torch.float16, torch.float32), device="cuda", exclude=("reference",)
    ),  # fmt: skip
    indirect=["backend"],
)
@pytest.mark.parametrize("shape", BIRDS + COCO, ids=lambda s: "x".join(map(str, s)))
def test_gpu_real_shapes_channels_last(backend, dtype, shape):
    batch, cin, cout, h = shape
    _check_parity(backend, *conv_inputs(batch, cin, cout, h, h, dtype, "channels_last"))
    if dtype != torch.float16 and shape in BIRDS:
        _check_parity(backend, *conv_inputs(batch, cin, cout, h, h, dtype, "contiguous"))


@pytest.mark.gpu
@pytest.mark.parametrize("backend", kernel_backends(OP, device="cuda"), indirect=True)
def test_gpu_autocast_bf16(backend):
    x, weight, _ = conv_inputs(20, 64, 128, 32, 32, layout="channels_last")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        y = ops.upsample_conv3x3(x, weight, backend=backend)
        y_ref = ops.upsample_conv3x3(x, weight, backend="reference")
    assert y.dtype == torch.bfloat16
    exact = exact_upsample_conv(x.bfloat16(), weight.bfloat16())
    assert_rel_parity("y", y, y_ref, exact, torch.bfloat16)


# --- the Triton kernels compiled for the GPU without one (Triton's own ptxas) ---------------------

AOT_SCRIPT = r"""
from attngan_fast.ops.triton import upsample_conv as U

for dt in ("bf16", "fp32"):
    for name, kern, unit, div in (
        ("forward", U._forward_kernel, ("sxc", "syc"),
         ("N", "K", "sxb", "sxh", "sxw", "syb", "syh", "syw")),
        ("grad_x", U._grad_x_kernel, ("sgc", "sxc"),
         ("N", "K", "sgb", "sgh", "sgw", "sxb", "sxh", "sxw")),
    ):
        for cfg in kern.configs:
            tile = (cfg.kwargs["BLOCK_M"], cfg.kwargs["BLOCK_N"], cfg.kwargs["BLOCK_K"])
            if dt == "fp32" and tile in U.TF32_SKIP:  # pruned by the autotuner
                continue
            consts = dict(cfg.kwargs, PRECISION="tf32", DOT_F32=False, **{u: 1 for u in unit})
            if name == "forward":
                consts["STATS"] = False  # with the statistics epilogue: test_upsample_conv_bn
            aot_compile(f"{name} {dt} {cfg.kwargs}", kern.fn, consts, {"*": dt, "out_ptr": "fp32"},
                        divisible=div, options=autotune_options(cfg))
    consts = dict(BLOCK_M=64, BLOCK_N=64, BLOCK_K=32, PRECISION="tf32", DOT_F32=False, sxc=1, sgc=1)
    div = ("CIN", "COUT", "PIX_PER_SPLIT", "sxb", "sxh", "sxw", "sgb", "sgh", "sgw")
    aot_compile(f"grad_weight {dt}", U._grad_weight_kernel, consts, {"*": dt, "out_ptr": "fp32"},
                divisible=div, options={"num_warps": 8, "num_stages": 2})
"""


@pytest.mark.slow
@pytest.mark.parametrize("arch", ARCHS)
def test_triton_kernels_compile_for_gpu_without_spills(arch):
    """Every autotune config of the forward and grad_x GEMMs and grad_weight's config compile for
    sm_90 and sm_80 (channels-last specialisation) within shared memory and without register
    spills (fp32: the configs the autotuner tries in TF32, TF32_SKIP pruned)."""
    results = run_aot_script(AOT_SCRIPT, arch)
    tiles, skipped = len(tri.GPU_TILES), len(tri.TF32_SKIP)
    assert len(results) == 2 * (2 * tiles + 1) - 2 * skipped  # fp32: TF32_SKIP pruned
    assert_fits(results, arch)
    for r in results:
        assert r["stack"] <= SPILL_SLACK, r
