"""Triton backend of upsample_conv3x3 (path (b) kernels) against float64 references.

On CPU the kernels run through the Triton interpreter (tests/conftest.py sets TRITON_INTERPRET=1):
tiny odd shapes only. The ``gpu`` tests use G's real shapes.
"""

import gpu_numerics
import numpy as np
import pytest
import torch
import torch.nn.functional as F
import triton
import triton.language as tl
from parity import assert_rel_parity
from triton_aot import ARCHS, SPILL_SLACK, assert_fits, run_aot_script

from attngan_fast import ops
from attngan_fast.ops import _layout, phase_conv
from attngan_fast.ops import upsample_conv as torch_backend
from attngan_fast.ops.triton import upsample_conv as triton_backend

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def _run(x, weight, grad_y, backend):
    x = x.detach().requires_grad_(True)
    weight = weight.detach().requires_grad_(True)
    y = ops.upsample_conv3x3(x, weight, backend=backend)
    gx, gw = torch.autograd.grad(y, (x, weight), grad_y)
    return y, gx, gw


def _exact(x, weight, grad_y):
    x64 = x.detach().double().requires_grad_(True)
    w64 = weight.detach().double().requires_grad_(True)
    y = torch_backend.upsample_conv3x3_reference(x64, w64)
    return (y, *torch.autograd.grad(y, (x64, w64), grad_y.double()))


def _check_against_torch(x, weight, grad_y):
    got = _run(x, weight, grad_y, "triton")
    ref = _run(*gpu_numerics.cudnn_operands(x, weight, grad_y), "torch")  # TF32 as cuDNN would
    exact = _exact(x, weight, grad_y)
    for name, g, r, e in zip(("y", "grad_x", "grad_weight"), got, ref, exact):
        assert g.dtype == x.dtype and g.shape == e.shape, name
        assert_rel_parity(name, g, r, e, x.dtype)
    fmt = _layout.memory_format(x)
    assert got[0].is_contiguous(memory_format=fmt) and got[1].is_contiguous(memory_format=fmt)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("batch", [1, 3])
def test_forward_and_gradients(batch, channels_last, dtype):
    x = torch.randn(batch, 5, 5, 3).to(dtype)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    weight = (torch.randn(6, 5, 3, 3) / 7).to(dtype)
    grad_y = torch.randn(batch, 6, 10, 6).to(dtype)
    _check_against_torch(x, weight, grad_y)


def test_wide_channels_span_several_tiles():
    """More than one tile along every GEMM axis (M pixels, N and K channels) and a K remainder."""
    x = torch.randn(2, 37, 9, 5)
    weight = torch.randn(20, 37, 3, 3) / 18
    _check_against_torch(x, weight, torch.randn(2, 20, 18, 10))


def test_stride_zero_upstream_gradient():
    x = torch.randn(3, 5, 3, 4)
    weight = torch.randn(7, 5, 3, 3)
    grad_y = torch.ones(1, 1, 1, 1).expand(3, 7, 6, 8)  # stride 0 everywhere
    _check_against_torch(x, weight, grad_y)


def test_only_weight_needs_grad(monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)  # IEEE: against float64
    x = torch.randn(2, 3, 4, 5)
    weight = torch.randn(6, 3, 3, 3, requires_grad=True)
    y = ops.upsample_conv3x3(x, weight, backend="triton")
    (gw,) = torch.autograd.grad(y.square().sum(), weight)
    w64 = weight.detach().double().requires_grad_(True)
    y64 = torch_backend.upsample_conv3x3_reference(x.double(), w64)
    torch.testing.assert_close(gw.double(), torch.autograd.grad(y64.square().sum(), w64)[0],
                               rtol=1e-4, atol=1e-4)  # fmt: skip


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
    x = torch.randn(2, 3, 4, 5, requires_grad=True)
    weight = torch.randn(4, 3, 3, 3, requires_grad=True)
    assert triton_backend.uses_triton_kernels(x, weight)
    ops.upsample_conv3x3(x, weight, backend="triton").sum().backward()
    assert x.grad is not None and weight.grad is not None


def test_float64_takes_path_a(monkeypatch):
    calls = []
    forward = phase_conv.upsample_conv3x3_phase_forward

    def spy(*args):
        calls.append(args)
        return forward(*args)

    monkeypatch.setattr(phase_conv, "upsample_conv3x3_phase_forward", spy)
    x = torch.randn(2, 3, 4, 5, dtype=torch.float64)
    weight = torch.randn(4, 3, 3, 3, dtype=torch.float64)
    y = ops.upsample_conv3x3(x, weight, backend="triton")
    assert len(calls) == 1
    torch.testing.assert_close(y, torch_backend.upsample_conv3x3_reference(x, weight))


@pytest.mark.parametrize("channels_last", [False, True])
def test_opcheck(channels_last):
    x = torch.randn(2, 3, 4, 5)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    x.requires_grad_(True)
    weight = torch.randn(6, 3, 3, 3, requires_grad=True)
    torch.library.opcheck(torch.ops.attngan_fast.upsample_conv3x3.default, (x, weight, "triton"))


# --- GPU: G's real shapes -------------------------------------------------------------------------

# (batch, Cin, conv out channels = 2 x upBlock out, H = W of the input)
# INIT_STAGE_G upsample1..4, then NEXT_STAGE_G's upBlock(2 ngf, ngf) at 64^2 and 128^2
BIRDS = [(20, 512, 512, 4), (20, 256, 256, 8), (20, 128, 128, 16), (20, 64, 64, 32),
         (20, 64, 64, 64), (20, 64, 64, 128)]  # fmt: skip
COCO = [(14, 768, 768, 4), (14, 384, 384, 8), (14, 192, 192, 16), (14, 96, 96, 32),
        (14, 96, 96, 64), (14, 96, 96, 128)]  # fmt: skip


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("shape", BIRDS + COCO)
def test_gpu_real_shapes_channels_last(shape, dtype):
    batch, cin, cout, h = shape
    x = torch.randn(batch, cin, h, h, device="cuda").to(dtype)
    x = x.to(memory_format=torch.channels_last)
    weight = (torch.randn(cout, cin, 3, 3, device="cuda") / (3 * cin**0.5)).to(dtype)
    grad_y = torch.randn(batch, cout, 2 * h, 2 * h, device="cuda").to(dtype)
    _check_against_torch(x, weight, grad_y.contiguous(memory_format=torch.channels_last))


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("shape", BIRDS)
def test_gpu_real_shapes_nchw(shape, dtype):
    batch, cin, cout, h = shape
    x = torch.randn(batch, cin, h, h, device="cuda").to(dtype)
    weight = (torch.randn(cout, cin, 3, 3, device="cuda") / (3 * cin**0.5)).to(dtype)
    _check_against_torch(x, weight, torch.randn(batch, cout, 2 * h, 2 * h, device="cuda").to(dtype))


@pytest.mark.gpu
def test_gpu_autocast_bf16():
    x = torch.randn(20, 64, 32, 32, device="cuda").to(memory_format=torch.channels_last)
    weight = torch.randn(128, 64, 3, 3, device="cuda") / 24
    with torch.autocast("cuda", dtype=torch.bfloat16):
        y = ops.upsample_conv3x3(x, weight, backend="triton")
        y_ref = ops.upsample_conv3x3(x, weight, backend="torch")
    assert y.dtype == torch.bfloat16
    assert_rel_parity("y", y, y_ref, torch_backend.upsample_conv3x3_reference(
        x.bfloat16().double(), weight.bfloat16().double()), torch.bfloat16)  # fmt: skip


# --- compiled for the GPU without one (Triton's own ptxas) ----------------------------------------

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
def test_kernels_compile_for_gpu_without_spills(arch):
    """Every autotune config of the forward and grad_x GEMMs and grad_weight's config compile for
    sm_90 and sm_80 (channels-last specialisation) within shared memory and without register
    spills (fp32: the configs the autotuner tries in TF32, TF32_SKIP pruned)."""
    results = run_aot_script(AOT_SCRIPT, arch)
    tiles, skipped = len(triton_backend.GPU_TILES), len(triton_backend.TF32_SKIP)
    assert len(results) == 2 * (2 * tiles + 1) - 2 * skipped  # fp32: TF32_SKIP pruned
    assert_fits(results, arch)
    for r in results:
        assert r["stack"] <= SPILL_SLACK, r


@triton.jit
def _round_kernel(x_ptr, out_ptr):
    offs = tl.arange(0, 1024)
    tl.store(out_ptr + offs, triton_backend._round_tf32(tl.load(x_ptr + offs)))


def test_tf32_rounding_is_to_nearest_ties_away():
    """The fp32 operands of a TF32 product are rounded as cuDNN's cvt.rna, not truncated."""
    x = torch.randn(1024, device=DEVICE) * 1e3
    x[:4] = torch.tensor([1 + 2**-11, -(1 + 2**-11), float("inf"), 3.0])
    out = torch.empty_like(x)
    _round_kernel[(1,)](x, out)
    np.testing.assert_array_equal(out.cpu().numpy(), gpu_numerics.tf32_round(x.cpu().numpy()))
    assert out[0] == 1 + 2**-10 and out[1] == -(1 + 2**-10) and out[3] == 3.0


def test_tf32_skip_tiles_are_pruned_for_fp32_only():
    configs = [
        triton.Config({"BLOCK_M": m, "BLOCK_N": n, "BLOCK_K": k}, num_warps=w, num_stages=s)
        for m, n, k, w, s in triton_backend.GPU_TILES
    ]

    def kept(dtype, precision):
        args = {"x_ptr": torch.empty(1, dtype=dtype), "N": 256, "K": 256}
        picked = triton_backend._prune(configs, args, PRECISION=precision)
        return {(c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"], c.kwargs["BLOCK_K"]) for c in picked}

    all_tiles = {t[:3] for t in triton_backend.GPU_TILES}
    assert kept(torch.float32, "tf32") == all_tiles - triton_backend.TF32_SKIP
    assert kept(torch.float32, "ieee") == all_tiles
    assert kept(torch.bfloat16, "tf32") == all_tiles
