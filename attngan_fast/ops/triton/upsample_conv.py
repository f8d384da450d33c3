"""Triton backend of ``upsample_conv3x3``: nearest x2 + conv3x3 as four-phase implicit GEMMs.

Path (b), the kernels here (see ``attngan_fast.ops.phase_conv`` for the phase algebra and the
phase-weight layout); every kernel takes arbitrary 4-D strides, so NCHW-contiguous and
channels-last tensors both work (channels-last gives contiguous channel vectors, the fast case):

* forward: one program = one phase (py, px) of BLOCK_M input pixels x BLOCK_N output channels;
  a flat K loop over 4 taps x Cin (one x tile and one phase-weight tile per step, software
  pipelined); the result is stored straight into its interleaved positions (2h + py, 2w + px) of
  y (B x Cout x 2H x 2W) -- no upsampled tensor, no separate interleave pass. The phase is the
  fastest grid index, so the four programs reading the same x tile run together (L2 hits).
* grad_x: at the input resolution, a GEMM over K = 4 phases x 4 taps x Cout gathering grad_y at
  (2(i - dy) + py, 2(j - dx) + px) against the transposed phase weights.
* grad_weight: for each phase, the 2 x 2 tap gradients (4 accumulators) reduced over the pixels in
  SPLIT_K deterministic slices (no atomics), summed and folded back to 3x3 by
  ``fold_phase_weight_grad``.

Precision: accumulation is fp32. ``tl.dot`` runs on tensor cores for bf16/fp16 (phase weights
rounded to the input dtype: about 1.4x the reference's relative error, inside the 2x parity rule);
for fp32 it uses TF32 exactly when ``torch.backends.cudnn.allow_tf32`` is on (PyTorch's default;
what cuDNN does for the reference conv), else IEEE fp32. In TF32 both operands are first rounded
to nearest (``_round_tf32``, as cuDNN's ``cvt.rna``): fed raw fp32 bits, the tensor cores truncate,
which gave about 3x cuDNN's error under the GPU-numerics emulation (tests/ops/gpu_numerics.py).
The epilogue statistics divide with ``tl.div_rn`` (fp32 ``/`` is approximate on the GPU).

Fallback to path (a) (``phase_conv``: one cuDNN 2x2 conv + pixel shuffle): float64 inputs (the
gradcheck dtype; fp64 ``tl.dot`` is not used) and tensors of 2**31 elements or more (int32
offsets). Which path is faster per shape (NCHW inputs above all) is to be measured on the GPU
(benchmarks/NOTES.md). The forward and grad_x GEMMs are autotuned over ``GPU_TILES``.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from attngan_fast.ops import _layout, phase_conv, registry
from attngan_fast.ops import upsample_conv as op
from attngan_fast.ops.triton._common import (
    TRITON,
    device_support,
    launches_on_input_device,
    sm80_support,
    triton_interpret,
)

_INT32_LIMIT = 2**31


def supports(call: registry.Call) -> str | None:
    """The calls these kernels take (see ``_common``; float64 runs path (a), cuDNN's conv)."""
    why = device_support(call)
    if why is None and call.dtype == torch.bfloat16:
        why = sm80_support(call, "bfloat16 tensor-core products")
    return why


def uses_triton_kernels(x: Tensor, weight: Tensor) -> bool:
    """True when path (b) (the Triton kernels) runs for these inputs, False for path (a)."""
    b, _, h, w = x.shape
    big = max(x.numel(), b * weight.shape[0] * 4 * h * w) >= _INT32_LIMIT
    return x.dtype != torch.float64 and not big


def _precision(dtype: torch.dtype) -> str:
    if dtype == torch.float32 and not torch.backends.cudnn.allow_tf32:
        return "ieee"
    return "tf32"  # ignored by tl.dot for bf16/fp16


def _dot_f32(x: Tensor) -> bool:
    """bf16 under the interpreter: fp32 dots and hand-rounded bf16 stores (see _mma, cast_out)."""
    return x.dtype == torch.bfloat16 and x.device.type == "cpu"


# --- kernels ----------------------------------------------------------------------------------


@triton.jit
def cast_out(v, dtype: tl.constexpr, RTNE_BF16: tl.constexpr):
    """v.to(dtype) rounding to nearest even. RTNE_BF16 (interpreter only: its fp32 -> bf16 cast
    truncates) rounds the fp32 bits by hand first; compiled Triton rounds to nearest already."""
    if RTNE_BF16:
        bits = v.to(tl.float32).to(tl.uint32, bitcast=True)
        bits = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16 << 16
        v = bits.to(tl.float32, bitcast=True)
    return v.to(dtype)


@triton.jit
def _round_tf32(x):
    """fp32 ``x`` rounded to the nearest TF32 value, ties away from zero (``cvt.rna.tf32.f32``,
    what cuBLAS / cuDNN do): the tensor cores would otherwise read the raw fp32 bits, a
    truncation with about twice the error and a bias."""
    bits = x.to(tl.uint32, bitcast=True)
    return ((bits + 0x1000) & 0xFFFFE000).to(tl.float32, bitcast=True)


@triton.jit
def _mma(a, b, acc, PRECISION: tl.constexpr, DOT_F32: tl.constexpr):
    """acc + a @ b. DOT_F32 (interpreter only: its bf16 ``tl.dot`` reads raw bits) multiplies in
    fp32, which is exact for bf16 products, as the tensor cores are. fp32 operands in TF32 are
    rounded to nearest first (``_round_tf32``)."""
    if DOT_F32:
        acc = tl.dot(a.to(tl.float32), b.to(tl.float32), acc, input_precision="ieee")
    elif PRECISION == "tf32" and a.dtype == tl.float32:
        acc = tl.dot(_round_tf32(a), _round_tf32(b), acc, input_precision="tf32")
    else:
        acc = tl.dot(a, b, acc, input_precision=PRECISION)
    return acc


# (BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages) autotuned on the GPU (all compile for sm_90
# without register spills, <= 160 KB shared memory in fp32: tests/ops/test_upsample_conv.py)
GPU_TILES = [(128, 128, 32, 8, 3), (128, 64, 32, 4, 3), (64, 128, 32, 4, 3), (64, 64, 32, 4, 4),
             (128, 128, 64, 8, 3), (128, 64, 64, 4, 3), (64, 64, 64, 4, 3)]  # fmt: skip
# (BLOCK_M, BLOCK_N, BLOCK_K) not tried for fp32 in TF32: with the operand rounding they spill
# (72-272 bytes a thread on sm_90, 8-16 on sm_80).
TF32_SKIP = {(128, 64, 64)}


def _gemm_configs() -> list[triton.Config]:
    """Autotuned tile shapes of the forward and grad_x GEMMs (one config when interpreted)."""
    if triton_interpret():
        # few, wide programs (the interpreter's cost is per op), still several N and K tiles
        return [triton.Config({"BLOCK_M": 64, "BLOCK_N": 16, "BLOCK_K": 16}, num_warps=1)]
    return [
        triton.Config({"BLOCK_M": m, "BLOCK_N": n, "BLOCK_K": k}, num_warps=w, num_stages=st)
        for m, n, k, w, st in GPU_TILES
    ]


def _prune(configs, named_args, **kwargs):
    """Drop tiles wider than the problem (N), K-chunks wider than the channels, and for fp32 in
    TF32 the tiles of TF32_SKIP."""
    n, k = named_args["N"], named_args["K"]
    operand = next(v for v in named_args.values() if isinstance(v, torch.Tensor))
    tf32 = operand.dtype == torch.float32 and kwargs.get("PRECISION") == "tf32"
    keep = [
        c for c in configs
        if c.kwargs["BLOCK_N"] <= max(16, triton.next_power_of_2(n))
        and c.kwargs["BLOCK_K"] <= max(16, triton.next_power_of_2(k))
        and not (tf32 and (c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"], c.kwargs["BLOCK_K"])
                 in TF32_SKIP)
    ]  # fmt: skip
    smallest = min(configs, key=lambda c: c.kwargs["BLOCK_M"] * c.kwargs["BLOCK_N"])
    return keep or [smallest]


_TUNE = {
    "configs": _gemm_configs(),
    "key": ["NPIX", "H", "W", "N", "K"],
    "prune_configs_by": {"early_config_prune": _prune},
}


@triton.autotune(**dict(_TUNE, key=[*_TUNE["key"], "STATS"]))
@triton.jit
def _forward_kernel(
    x_ptr, wp_ptr, y_ptr, part_ptr, NPIX, H, W, N, K,
    sxb, sxc, sxh, sxw, syb, syc, syh, syw,
    PRECISION: tl.constexpr, DOT_F32: tl.constexpr, STATS: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    """One phase (py, px) of a BLOCK_M pixels x BLOCK_N output channels tile (N = Cout, K = Cin):

        y[b, n, 2h+py, 2w+px] = sum_{a,c,k} x[b, k, h+py-1+a, w+px-1+c] wp[4 phase + 2a + c][k, n]

    wp laid out 16 x K x N. The phase is the fastest grid index, so the four programs that read
    the same x tile run together (L2 hits) and write interleaved halves of the same output rows.

    STATS (the epilogue of ``upsample_conv3x3_bn_glu``): also part[0 | 1 | 2, program_id(0), n] =
    mean | M2 | count of channel n over this tile's pixels, from the values as stored (rounded to
    y's dtype), exact two-pass in registers; part is 3 x num_programs(0) x N float32.
    """
    phase = tl.program_id(0) % 4
    py = phase // 2
    px = phase % 2
    m = (tl.program_id(0) // 4) * BLOCK_M + tl.arange(0, BLOCK_M)
    n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    m_ok = m < NPIX
    n_ok = n < N
    b = m // (H * W)
    h = (m % (H * W)) // W
    w = m % W
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    k_tiles = tl.cdiv(K, BLOCK_K)
    for kk in range(0, 4 * k_tiles):  # K loop over (tap, channel chunk)
        tap = kk // k_tiles
        k = (kk % k_tiles) * BLOCK_K + tl.arange(0, BLOCK_K)
        k_ok = k < K
        hh = h + py - 1 + tap // 2
        ww = w + px - 1 + tap % 2
        ok = m_ok & (hh >= 0) & (hh < H) & (ww >= 0) & (ww < W)
        x_ptrs = x_ptr + (b * sxb + hh * sxh + ww * sxw)[:, None] + k[None, :] * sxc
        xt = tl.load(x_ptrs, mask=ok[:, None] & k_ok[None, :], other=0.0)
        w_ptrs = wp_ptr + ((phase * 4 + tap) * K + k)[:, None] * N + n[None, :]
        wt = tl.load(w_ptrs, mask=k_ok[:, None] & n_ok[None, :], other=0.0)
        acc = _mma(xt, wt, acc, PRECISION, DOT_F32)
    row = b * syb + (2 * h + py) * syh + (2 * w + px) * syw
    out = cast_out(acc, y_ptr.dtype.element_ty, DOT_F32)
    tl.store(y_ptr + row[:, None] + n[None, :] * syc, out, mask=m_ok[:, None] & n_ok[None, :])
    if STATS:
        v = tl.where(m_ok[:, None], out.to(tl.float32), 0.0)
        count = tl.sum(m_ok.to(tl.float32), axis=0)  # >= 1: every program has a valid pixel
        mean = tl.div_rn(tl.sum(v, axis=0), count)  # exact: fp32 / is approximate on GPUs
        d = tl.where(m_ok[:, None], v - mean[None, :], 0.0)
        splits = tl.num_programs(0)
        p_ptrs = part_ptr + tl.program_id(0) * N + n
        tl.store(p_ptrs, mean, mask=n_ok)
        tl.store(p_ptrs + splits * N, tl.sum(d * d, axis=0), mask=n_ok)
        tl.store(p_ptrs + 2 * splits * N, tl.zeros_like(mean) + count, mask=n_ok)


@triton.autotune(**_TUNE)
@triton.jit
def _grad_x_kernel(
    g_ptr, wpt_ptr, gx_ptr, NPIX, H, W, N, K,
    sgb, sgc, sgh, sgw, sxb, sxc, sxh, sxw,
    PRECISION: tl.constexpr, DOT_F32: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    """BLOCK_M input pixels x BLOCK_N input channels of grad_x (N = Cin, K = Cout):

        gx[b, n, h, w] = sum_{py,px,a,c,k} g[b, k, 2(h-dy)+py, 2(w-dx)+px] wpt[4py+2px+2a+c][k, n]

    with (dy, dx) = (py - 1 + a, px - 1 + c); wpt laid out 16 x K x N. K loop over 16 x Cout.
    """
    m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    m_ok = m < NPIX
    n_ok = n < N
    b = m // (H * W)
    h = (m % (H * W)) // W
    w = m % W
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    k_tiles = tl.cdiv(K, BLOCK_K)
    for kk in range(0, 16 * k_tiles):  # K loop over (phase, tap, channel chunk)
        tap = kk // k_tiles  # 4 phase + 2 a + c
        k = (kk % k_tiles) * BLOCK_K + tl.arange(0, BLOCK_K)
        k_ok = k < K
        py = tap // 8
        px = (tap // 4) % 2
        i = h - (py - 1 + (tap // 2) % 2)
        j = w - (px - 1 + tap % 2)
        ok = m_ok & (i >= 0) & (i < H) & (j >= 0) & (j < W)
        row = b * sgb + (2 * i + py) * sgh + (2 * j + px) * sgw
        gt = tl.load(g_ptr + row[:, None] + k[None, :] * sgc, mask=ok[:, None] & k_ok[None, :],
                     other=0.0)  # fmt: skip
        w_ptrs = wpt_ptr + (tap * K + k)[:, None] * N + n[None, :]
        wt = tl.load(w_ptrs, mask=k_ok[:, None] & n_ok[None, :], other=0.0)
        acc = _mma(gt, wt, acc, PRECISION, DOT_F32)
    ptrs = gx_ptr + (b * sxb + h * sxh + w * sxw)[:, None] + n[None, :] * sxc
    out = cast_out(acc, gx_ptr.dtype.element_ty, DOT_F32)
    tl.store(ptrs, out, mask=m_ok[:, None] & n_ok[None, :])


@triton.jit
def _tap_grad(acc, x_ptr, gt, b, i, j, q_ok, ci, ci_ok, H, W, sxb, sxc, sxh, sxw, DY, DX,
              PRECISION: tl.constexpr, DOT_F32: tl.constexpr):  # fmt: skip
    """acc[ci, co] += sum_q x[b, ci, i + DY, j + DX] gt[q, co] (q = pixels of this slice)."""
    ii = i + DY
    jj = j + DX
    ok = q_ok & (ii >= 0) & (ii < H) & (jj >= 0) & (jj < W)
    ptrs = x_ptr + (b * sxb + ii * sxh + jj * sxw)[None, :] + ci[:, None] * sxc
    xt = tl.load(ptrs, mask=ci_ok[:, None] & ok[None, :], other=0.0)
    return _mma(xt, gt, acc, PRECISION, DOT_F32)


@triton.jit
def _store_tap(out_ptr, acc, tap_base, ci, co, ok, COUT):
    tl.store(out_ptr + tap_base + ci[:, None] * COUT + co[None, :], acc, mask=ok)


@triton.jit
def _grad_weight_kernel(
    x_ptr, g_ptr, out_ptr, NPIX, H, W, CIN, COUT, PIX_PER_SPLIT,
    sxb, sxc, sxh, sxw, sgb, sgc, sgh, sgw,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    PRECISION: tl.constexpr, DOT_F32: tl.constexpr,
):  # fmt: skip
    """out[split, p, a, c][ci, co] = sum over this split's pixels q = (b, i, j) of
    x[b, ci, i+py-1+a, j+px-1+c] g[b, co, 2i+py, 2j+px]; out is SPLIT x 16 x CIN x COUT fp32."""
    ci = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    co = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    phase = tl.program_id(2) % 4
    split = tl.program_id(2) // 4
    py = phase // 2
    px = phase % 2
    ci_ok = ci < CIN
    co_ok = co < COUT
    acc00 = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    acc01 = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    acc10 = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    acc11 = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    q_start = split * PIX_PER_SPLIT
    q_end = tl.minimum(q_start + PIX_PER_SPLIT, NPIX)
    for q0 in range(q_start, q_end, BLOCK_K):
        q = q0 + tl.arange(0, BLOCK_K)
        q_ok = q < q_end
        b = q // (H * W)
        i = (q % (H * W)) // W
        j = q % W
        row = b * sgb + (2 * i + py) * sgh + (2 * j + px) * sgw
        gt = tl.load(g_ptr + row[:, None] + co[None, :] * sgc, mask=q_ok[:, None] & co_ok[None, :],
                     other=0.0)  # fmt: skip
        acc00 = _tap_grad(acc00, x_ptr, gt, b, i, j, q_ok, ci, ci_ok, H, W, sxb, sxc, sxh, sxw,
                          py - 1, px - 1, PRECISION, DOT_F32)  # fmt: skip
        acc01 = _tap_grad(acc01, x_ptr, gt, b, i, j, q_ok, ci, ci_ok, H, W, sxb, sxc, sxh, sxw,
                          py - 1, px, PRECISION, DOT_F32)  # fmt: skip
        acc10 = _tap_grad(acc10, x_ptr, gt, b, i, j, q_ok, ci, ci_ok, H, W, sxb, sxc, sxh, sxw,
                          py, px - 1, PRECISION, DOT_F32)  # fmt: skip
        acc11 = _tap_grad(acc11, x_ptr, gt, b, i, j, q_ok, ci, ci_ok, H, W, sxb, sxc, sxh, sxw,
                          py, px, PRECISION, DOT_F32)  # fmt: skip
    ok = ci_ok[:, None] & co_ok[None, :]
    base = (split * 16 + phase * 4) * CIN * COUT
    _store_tap(out_ptr, acc00, base, ci, co, ok, COUT)
    _store_tap(out_ptr, acc01, base + CIN * COUT, ci, co, ok, COUT)
    _store_tap(out_ptr, acc10, base + 2 * CIN * COUT, ci, co, ok, COUT)
    _store_tap(out_ptr, acc11, base + 3 * CIN * COUT, ci, co, ok, COUT)


# --- launchers --------------------------------------------------------------------------------


def _forward(x: Tensor, weight: Tensor, stats: bool) -> tuple[Tensor, Tensor | None]:
    """y, and with ``stats`` the epilogue's partial statistics (3 x SPLIT x Cout float32)."""
    b, cin, h, w = x.shape
    cout = weight.shape[0]
    # 4 x Cout x Cin x 2 x 2 -> 16 (phase, tap) x Cin x Cout
    wp = phase_conv.phase_weights(weight).permute(0, 3, 4, 2, 1).reshape(16, cin, cout)
    wp = wp.to(x.dtype).contiguous()
    y = torch.empty(b, cout, 2 * h, 2 * w, device=x.device, dtype=x.dtype,
                    memory_format=_layout.memory_format(x))  # fmt: skip
    npix = b * h * w

    def splits(block_m: int) -> int:
        return 4 * triton.cdiv(npix, block_m)

    # room for the smallest tile's partials (the autotuner may try every config)
    min_m = min(c.kwargs["BLOCK_M"] for c in _forward_kernel.configs)
    flat = (
        torch.empty(3 * splits(min_m) * cout, device=x.device, dtype=torch.float32) if stats else y
    )

    def grid(meta):
        return splits(meta["BLOCK_M"]), triton.cdiv(cout, meta["BLOCK_N"])

    _forward_kernel[grid](
        x, wp, y, flat, npix, h, w, cout, cin, *x.stride(), *y.stride(),
        PRECISION=_precision(x.dtype), DOT_F32=_dot_f32(x), STATS=stats,
    )  # fmt: skip
    if not stats:
        return y, None
    used = splits(_forward_kernel.best_config.kwargs["BLOCK_M"])  # the config that ran last
    return y, flat[: 3 * used * cout].view(3, used, cout)


@launches_on_input_device
def upsample_conv3x3_forward(x: Tensor, weight: Tensor) -> Tensor:
    if not uses_triton_kernels(x, weight):
        return phase_conv.upsample_conv3x3_phase_forward(x, weight)
    return _forward(x, weight, stats=False)[0]


@launches_on_input_device
def upsample_conv3x3_forward_stats(x: Tensor, weight: Tensor) -> tuple[Tensor, Tensor]:
    """(y, partial statistics of y: 3 x SPLIT x Cout float32, mean | M2 | count per tile) for
    ``uses_triton_kernels(x, weight)`` inputs; ``batch_norm.merge_partials`` reduces them."""
    return _forward(x, weight, stats=True)  # part is never None here


def _grad_x(grad_y: Tensor, x: Tensor, weight: Tensor) -> Tensor:
    b, cin, h, w = x.shape
    cout = weight.shape[0]
    # 4 x Cout x Cin x 2 x 2 -> 16 (phase, tap) x Cout x Cin
    wpt = phase_conv.phase_weights(weight).permute(0, 3, 4, 1, 2).reshape(16, cout, cin)
    wpt = wpt.to(x.dtype).contiguous()
    grad_x = torch.empty_like(x, memory_format=_layout.memory_format(x))
    npix = b * h * w

    def grid(meta):
        return triton.cdiv(npix, meta["BLOCK_M"]), triton.cdiv(cin, meta["BLOCK_N"])

    _grad_x_kernel[grid](
        grad_y, wpt, grad_x, npix, h, w, cin, cout, *grad_y.stride(), *grad_x.stride(),
        PRECISION=_precision(x.dtype), DOT_F32=_dot_f32(x),
    )  # fmt: skip
    return grad_x


def _grad_weight_blocks(device: torch.device) -> tuple[int, int, int]:
    """(BLOCK_M = Cin, BLOCK_N = Cout, BLOCK_K = pixels) of grad_weight's four accumulators:
    64 x 64 x 32 on the GPU (no register spills with 8 warps, sm_90); 16 x 16 x 64 interpreted."""
    return (64, 64, 32) if device.type == "cuda" else (16, 16, 64)


def _split_k(tiles: int, npix: int, block_k: int, device: torch.device) -> int:
    """Pixel slices for grad_weight: enough programs to fill the GPU, each >= 8 K-blocks."""
    if device.type != "cuda":
        return min(2, triton.cdiv(npix, block_k))  # the interpreter: exercise the split, stay small
    sms = torch.cuda.get_device_properties(device).multi_processor_count
    want = triton.cdiv(2 * sms, tiles)
    return max(1, min(want, triton.cdiv(npix, 8 * block_k)))


def _grad_weight(grad_y: Tensor, x: Tensor, weight: Tensor) -> Tensor:
    b, cin, h, w = x.shape
    cout = weight.shape[0]
    npix = b * h * w
    bm, bn, bk = _grad_weight_blocks(x.device)
    tiles = triton.cdiv(cin, bm) * triton.cdiv(cout, bn) * 4
    split = _split_k(tiles, npix, bk, x.device)
    per_split = triton.cdiv(triton.cdiv(npix, split), bk) * bk
    split = triton.cdiv(npix, per_split)
    partial = torch.empty(split, 16, cin, cout, device=x.device, dtype=torch.float32)
    grid = (triton.cdiv(cin, bm), triton.cdiv(cout, bn), 4 * split)
    _grad_weight_kernel[grid](
        x, grad_y, partial, npix, h, w, cin, cout, per_split, *x.stride(), *grad_y.stride(),
        BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, PRECISION=_precision(x.dtype), DOT_F32=_dot_f32(x),
        num_warps=8 if x.device.type == "cuda" else 1, num_stages=2,
    )  # fmt: skip
    # SPLIT x (4 phases x 2 x 2 taps) x Cin x Cout -> 4 x Cout x Cin x 2 x 2
    grad_phase = partial.sum(0).reshape(4, 2, 2, cin, cout).permute(0, 4, 3, 1, 2)
    return phase_conv.fold_phase_weight_grad(grad_phase).to(weight.dtype)


@launches_on_input_device
def upsample_conv3x3_backward(
    grad_y: Tensor, x: Tensor, weight: Tensor, need_x: bool, need_weight: bool
) -> tuple[Tensor | None, Tensor | None]:
    if not uses_triton_kernels(x, weight):
        return phase_conv.upsample_conv3x3_phase_backward(grad_y, x, weight, need_x, need_weight)
    grad_x = _grad_x(grad_y, x, weight) if need_x else None
    grad_weight = _grad_weight(grad_y, x, weight) if need_weight else None
    return grad_x, grad_weight


TRITON.register(
    op.OP,
    upsample_conv3x3_forward,
    op.backward_without_none(upsample_conv3x3_backward),
    supports=supports,
)
