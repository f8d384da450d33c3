"""Triton backend of ``batch_norm_act`` (BatchNorm + GLU, BatchNorm + residual add).

Every tensor is seen as NB x C x S with strides (sb, sc, ss), per-channel statistics running over
NB and S: NCHW-contiguous 4-D / 3-D x as B x C x (H W) (S contiguous); channels-last 4-D x as
1 x C x (B H W) and 2-D x (B x C) as 1 x C x B (C contiguous). y, grad_y, grad_x and the residual
use x's memory format (grad_y is copied to it when it arrives in the other one).

Kernels (accumulation in fp32; fp64 for fp64 x):

* training forward, pass 1 ``_stats_kernel``: each program merges (count, mean, M2) of its tiles of
  BLOCK_S x BLOCK_C values (exact two-pass inside a tile, Chan's formula across tiles) -> per-split
  partials, 3 x SPLIT x C.
* ``merge_partials`` / ``_merge_kernel``: groups of BLOCK_P partials merged at once (Chan's formula
  for many groups: mean = sum n_i mean_i / n, M2 = sum M2_i + n_i (mean_i - mean)^2), repeated
  until one is left -> the batch mean and biased variance. The upBlock op feeds it the partials of
  its conv's epilogue instead (``upsample_conv3x3_bn_glu``).
* forward, pass 2 ``_apply_kernel``: loads the per-channel mean and variance (the batch's, or the
  running ones in eval mode, where this pass is the only one), normalises, applies the affine and
  the GLU (reads C, writes C/2 channels) or adds the residual.
* backward, pass 1 ``_grad_reduce_kernel``: recomputes z (and the GLU gate) from x and grad_y in one
  read, per-split partial sums of dz and dz * xhat (= grad_bias and grad_weight once summed); in
  eval mode it also writes grad_x (no second pass needed).
* backward, pass 2 ``_grad_apply_kernel`` (training): grad_x = w invstd (dz - sum dz / N - xhat
  sum(dz xhat) / N).

Precision: fp32 accumulation (fp64 for fp64 x); the per-channel statistics and ``invstd`` divide
and take square roots correctly rounded (``tl.div_rn``, ``tl.sqrt_rn``: fp32 ``/`` and ``tl.sqrt``
are approximate on the GPU, and a mean off by an ulp shows in the summed gradients; once per
channel and tile, so free); the GLU gate's ``tl.sigmoid`` stays approximate (elementwise,
within 2 units in the last place).

Falls back to the torch backend for tensors of 2**31 elements or more (int32 offsets).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from attngan_fast.ops import _checks, _layout
from attngan_fast.ops import batch_norm as reference
from attngan_fast.ops.triton._common import TRITON, device_support, launches_on_input_device
from attngan_fast.ops.triton.upsample_conv import cast_out

_INT32_LIMIT = 2**31
_TILE = 4096  # values per tile (per half for GLU)
# The backward's channels-last tile. Triton before 3.8 gives the GLU backward's reduction about
# twice the registers 3.8+ does: its 4096-value channels-last tile (32 x 128) spills 320-864
# bytes a thread there (sm_90 and sm_80; none on 3.8+), a 32 x 64 tile none.
_OLD_TRITON = tuple(int(p) for p in triton.__version__.split(".")[:2]) < (3, 8)
_GRAD_TILE, _GRAD_MAX_C = (_TILE // 2, 64) if _OLD_TRITON else (_TILE, 128)
_NUM_WARPS = 8  # 16 values per thread and tensor: no register spills on sm_90 (GLU backward)


def uses_triton_kernels(x: Tensor) -> bool:
    """True when the Triton kernels run for x, False for the torch fallback (huge tensors)."""
    return x.numel() < _INT32_LIMIT


# --- shared pieces of the kernels ---------------------------------------------------------------


@triton.jit
def _tile(s0, c0, BLOCK_S: tl.constexpr, BLOCK_C: tl.constexpr, S, CH):
    s = s0 + tl.arange(0, BLOCK_S)
    c = c0 + tl.arange(0, BLOCK_C)
    return s, c, (s < S)[:, None] & (c < CH)[None, :], c < CH


@triton.jit
def _div(x, y, ACC: tl.constexpr):
    """x / y correctly rounded (fp32 ``/`` is approximate on the GPU; the statistics divide
    once per channel and tile, so the exact division costs nothing measurable)."""
    if ACC == tl.float32:
        return tl.div_rn(x, y)
    return x / y


@triton.jit
def _channel_params(
    mean_ptr, var_ptr, w_ptr, b_ptr, c, c_ok, eps,
    HAS_W: tl.constexpr, HAS_B: tl.constexpr, ACC: tl.constexpr,
):  # fmt: skip
    """(mean, invstd, weight, bias) of channels c; weight 1 and bias 0 when absent."""
    mean = tl.load(mean_ptr + c, mask=c_ok, other=0.0).to(ACC)
    var = tl.load(var_ptr + c, mask=c_ok, other=1.0).to(ACC)
    if ACC == tl.float32:  # correctly rounded (tl.sqrt and / are approximate in fp32)
        invstd = tl.div_rn(1.0, tl.sqrt_rn(var + eps))
    else:
        invstd = 1.0 / tl.sqrt(var + eps)
    weight = tl.full(c.shape, 1.0, ACC)
    if HAS_W:
        weight = tl.load(w_ptr + c, mask=c_ok, other=1.0).to(ACC)
    bias = tl.zeros(c.shape, dtype=ACC)
    if HAS_B:
        bias = tl.load(b_ptr + c, mask=c_ok, other=0.0).to(ACC)
    return mean, invstd, weight, bias


@triton.jit
def _load(ptr, bb, s, c, mask, sb, sc, ss, ACC: tl.constexpr):
    return tl.load(ptr + bb * sb + s[:, None] * ss + c[None, :] * sc, mask=mask, other=0.0).to(ACC)


@triton.jit
def _glu_grads(g, za, zb):
    """d/dza and d/dzb of y = za * sigmoid(zb), times g."""
    gate = tl.sigmoid(zb)
    return g * gate, g * za * gate * (1.0 - gate)


# --- kernels ------------------------------------------------------------------------------------


@triton.jit
def _stats_kernel(
    x_ptr, part_ptr, S, C, sb, sc, ss, N_STILES, TOTAL, TILES_PER_SPLIT, SPLIT,
    BLOCK_S: tl.constexpr, BLOCK_C: tl.constexpr, ACC: tl.constexpr,
):  # fmt: skip
    """part[0 | 1 | 2, split, c] = mean | M2 | count of channel c over this split's tiles."""
    split = tl.program_id(0)
    c0 = tl.program_id(1) * BLOCK_C
    n = tl.zeros((BLOCK_C,), dtype=ACC)
    mean = tl.zeros((BLOCK_C,), dtype=ACC)
    m2 = tl.zeros((BLOCK_C,), dtype=ACC)
    u0 = split * TILES_PER_SPLIT
    for u in range(u0, tl.minimum(u0 + TILES_PER_SPLIT, TOTAL)):
        s0 = (u % N_STILES) * BLOCK_S
        s, c, mask, c_ok = _tile(s0, c0, BLOCK_S, BLOCK_C, S, C)
        xt = _load(x_ptr, u // N_STILES, s, c, mask, sb, sc, ss, ACC)
        n_t = tl.minimum(S - s0, BLOCK_S).to(ACC)
        mean_t = _div(tl.sum(xt, axis=0), n_t, ACC)
        d = tl.where(mask, xt - mean_t[None, :], 0.0)
        m2_t = tl.sum(d * d, axis=0)
        n_new = n + n_t
        delta = mean_t - mean
        mean += delta * _div(n_t, n_new, ACC)
        m2 += m2_t + delta * delta * _div(n * n_t, n_new, ACC)
        n = n_new
    c = c0 + tl.arange(0, BLOCK_C)
    c_ok = c < C
    tl.store(part_ptr + split * C + c, mean, mask=c_ok)
    tl.store(part_ptr + (SPLIT + split) * C + c, m2, mask=c_ok)
    tl.store(part_ptr + (2 * SPLIT + split) * C + c, n, mask=c_ok)


@triton.jit
def _merge_kernel(
    src_ptr, dst_ptr, mean_ptr, var_ptr, SPLIT, C,
    FINAL: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr, ACC: tl.constexpr,
):  # fmt: skip
    """Merge group g = program_id(0) of BLOCK_P partials (src: 3 x SPLIT x C, mean | M2 | count)
    -> dst[0 | 1 | 2, g, c] (dst: 3 x num_programs(0) x C), or, FINAL (one group), the mean
    and biased variance of channels c."""
    g = tl.program_id(0)
    p = g * BLOCK_P + tl.arange(0, BLOCK_P)
    c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    c_ok = c < C
    ok = (p < SPLIT)[:, None] & c_ok[None, :]
    offs = p[:, None] * C + c[None, :]
    mean_i = tl.load(src_ptr + offs, mask=ok, other=0.0).to(ACC)
    m2_i = tl.load(src_ptr + SPLIT * C + offs, mask=ok, other=0.0).to(ACC)
    n_i = tl.load(src_ptr + 2 * SPLIT * C + offs, mask=ok, other=0.0).to(ACC)
    n = tl.sum(n_i, axis=0)
    n_safe = tl.where(n > 0, n, 1.0)  # lanes past C only
    mean = _div(tl.sum(n_i * mean_i, axis=0), n_safe, ACC)
    d = mean_i - mean[None, :]
    m2 = tl.sum(m2_i + n_i * d * d, axis=0)  # empty lanes: n_i = M2_i = 0
    if FINAL:
        tl.store(mean_ptr + c, mean, mask=c_ok)
        tl.store(var_ptr + c, _div(m2, n_safe, ACC), mask=c_ok)
    else:
        groups = tl.num_programs(0)
        tl.store(dst_ptr + g * C + c, mean, mask=c_ok)
        tl.store(dst_ptr + (groups + g) * C + c, m2, mask=c_ok)
        tl.store(dst_ptr + (2 * groups + g) * C + c, n, mask=c_ok)


@triton.jit
def _apply_kernel(
    x_ptr, r_ptr, y_ptr, mean_ptr, var_ptr, w_ptr, b_ptr,
    S, C, CH, sb, sc, ss, syb, syc, sys, N_STILES, eps,
    GLU: tl.constexpr, HAS_W: tl.constexpr, HAS_B: tl.constexpr,
    BLOCK_S: tl.constexpr, BLOCK_C: tl.constexpr, ACC: tl.constexpr, RTNE_BF16: tl.constexpr,
):  # fmt: skip
    """y = glu(z) (channels c < CH = C / 2 read c and c + CH) or y = z + residual, where
    z = (x - mean) invstd weight + bias."""
    u = tl.program_id(0)
    bb = u // N_STILES
    s0 = (u % N_STILES) * BLOCK_S
    s, c, mask, c_ok = _tile(s0, tl.program_id(1) * BLOCK_C, BLOCK_S, BLOCK_C, S, CH)
    mean, invstd, weight, bias = _channel_params(
        mean_ptr, var_ptr, w_ptr, b_ptr, c, c_ok, eps, HAS_W, HAS_B, ACC
    )
    z = (_load(x_ptr, bb, s, c, mask, sb, sc, ss, ACC) - mean[None, :]) * (invstd * weight)[None, :]
    z += bias[None, :]
    if GLU:
        cb = c + CH
        mean_b, invstd_b, weight_b, bias_b = _channel_params(
            mean_ptr, var_ptr, w_ptr, b_ptr, cb, c_ok, eps, HAS_W, HAS_B, ACC
        )
        zb = _load(x_ptr, bb, s, cb, mask, sb, sc, ss, ACC) - mean_b[None, :]
        zb = zb * (invstd_b * weight_b)[None, :] + bias_b[None, :]
        y = z * tl.sigmoid(zb)
    else:
        y = z + _load(r_ptr, bb, s, c, mask, sb, sc, ss, ACC)
    y_ptrs = y_ptr + bb * syb + s[:, None] * sys + c[None, :] * syc
    tl.store(y_ptrs, cast_out(y, y_ptr.dtype.element_ty, RTNE_BF16), mask=mask)


@triton.jit
def _dz_xhat(
    g_ptr, x_ptr, mean_ptr, var_ptr, w_ptr, b_ptr, bb, s, c, mask, c_ok, CH, eps,
    sb, sc, ss, sgb, sgc, sgs,
    GLU: tl.constexpr, HAS_W: tl.constexpr, HAS_B: tl.constexpr, ACC: tl.constexpr,
):  # fmt: skip
    """Recompute, for channels c (and c + CH for GLU): dz = dL/dz, xhat and weight * invstd."""
    g = _load(g_ptr, bb, s, c, mask, sgb, sgc, sgs, ACC)
    mean, invstd, weight, bias = _channel_params(
        mean_ptr, var_ptr, w_ptr, b_ptr, c, c_ok, eps, HAS_W, HAS_B, ACC
    )
    xhat = (_load(x_ptr, bb, s, c, mask, sb, sc, ss, ACC) - mean[None, :]) * invstd[None, :]
    if GLU:
        cb = c + CH
        mean_b, invstd_b, weight_b, bias_b = _channel_params(
            mean_ptr, var_ptr, w_ptr, b_ptr, cb, c_ok, eps, HAS_W, HAS_B, ACC
        )
        xhat_b = _load(x_ptr, bb, s, cb, mask, sb, sc, ss, ACC) - mean_b[None, :]
        xhat_b *= invstd_b[None, :]
        za = xhat * weight[None, :] + bias[None, :]
        zb = xhat_b * weight_b[None, :] + bias_b[None, :]
        dz, dz_b = _glu_grads(g, za, zb)
        scale_b = weight_b * invstd_b
    else:  # add: dz = grad_y; the "b" half is unused
        dz, dz_b, xhat_b, scale_b = g, g, xhat, weight * invstd
    return dz, xhat, weight * invstd, dz_b, xhat_b, scale_b


@triton.jit
def _grad_reduce_kernel(
    g_ptr, x_ptr, mean_ptr, var_ptr, w_ptr, b_ptr, part_ptr, gx_ptr,
    S, C, CH, sb, sc, ss, sgb, sgc, sgs, N_STILES, TOTAL, TILES_PER_SPLIT, SPLIT, eps,
    GLU: tl.constexpr, TRAINING: tl.constexpr, HAS_W: tl.constexpr, HAS_B: tl.constexpr,
    BLOCK_S: tl.constexpr, BLOCK_C: tl.constexpr, ACC: tl.constexpr, RTNE_BF16: tl.constexpr,
):  # fmt: skip
    """part[0 | 1, split, c] = sum of dz | dz * xhat over this split's tiles; in eval mode also
    grad_x = dz weight invstd (x's strides)."""
    split = tl.program_id(0)
    c0 = tl.program_id(1) * BLOCK_C
    sum_dz = tl.zeros((BLOCK_C,), dtype=ACC)
    sum_dzx = tl.zeros((BLOCK_C,), dtype=ACC)
    sum_dz_b = tl.zeros((BLOCK_C,), dtype=ACC)
    sum_dzx_b = tl.zeros((BLOCK_C,), dtype=ACC)
    u0 = split * TILES_PER_SPLIT
    for u in range(u0, tl.minimum(u0 + TILES_PER_SPLIT, TOTAL)):
        bb = u // N_STILES
        s, c, mask, c_ok = _tile((u % N_STILES) * BLOCK_S, c0, BLOCK_S, BLOCK_C, S, CH)
        dz, xhat, scale, dz_b, xhat_b, scale_b = _dz_xhat(
            g_ptr, x_ptr, mean_ptr, var_ptr, w_ptr, b_ptr, bb, s, c, mask, c_ok, CH, eps,
            sb, sc, ss, sgb, sgc, sgs, GLU, HAS_W, HAS_B, ACC,
        )  # fmt: skip
        sum_dz += tl.sum(dz, axis=0)
        sum_dzx += tl.sum(dz * xhat, axis=0)
        if GLU:
            sum_dz_b += tl.sum(dz_b, axis=0)
            sum_dzx_b += tl.sum(dz_b * xhat_b, axis=0)
        if not TRAINING:
            ptrs = gx_ptr + bb * sb + s[:, None] * ss + c[None, :] * sc
            gx = cast_out(dz * scale[None, :], gx_ptr.dtype.element_ty, RTNE_BF16)
            tl.store(ptrs, gx, mask=mask)
            if GLU:
                gx_b = cast_out(dz_b * scale_b[None, :], gx_ptr.dtype.element_ty, RTNE_BF16)
                tl.store(ptrs + CH * sc, gx_b, mask=mask)
    c = c0 + tl.arange(0, BLOCK_C)
    c_ok = c < CH
    tl.store(part_ptr + split * C + c, sum_dz, mask=c_ok)
    tl.store(part_ptr + (SPLIT + split) * C + c, sum_dzx, mask=c_ok)
    if GLU:
        tl.store(part_ptr + split * C + CH + c, sum_dz_b, mask=c_ok)
        tl.store(part_ptr + (SPLIT + split) * C + CH + c, sum_dzx_b, mask=c_ok)


@triton.jit
def _grad_apply_kernel(
    g_ptr, x_ptr, mean_ptr, var_ptr, w_ptr, b_ptr, sums_ptr, gx_ptr,
    S, C, CH, sb, sc, ss, sgb, sgc, sgs, N_STILES, inv_n, eps,
    GLU: tl.constexpr, HAS_W: tl.constexpr, HAS_B: tl.constexpr,
    BLOCK_S: tl.constexpr, BLOCK_C: tl.constexpr, ACC: tl.constexpr, RTNE_BF16: tl.constexpr,
):  # fmt: skip
    """Training: grad_x = weight invstd (dz - sum(dz) / N - xhat sum(dz xhat) / N)."""
    u = tl.program_id(0)
    bb = u // N_STILES
    s, c, mask, c_ok = _tile((u % N_STILES) * BLOCK_S, tl.program_id(1) * BLOCK_C, BLOCK_S,
                             BLOCK_C, S, CH)  # fmt: skip
    dz, xhat, scale, dz_b, xhat_b, scale_b = _dz_xhat(
        g_ptr, x_ptr, mean_ptr, var_ptr, w_ptr, b_ptr, bb, s, c, mask, c_ok, CH, eps,
        sb, sc, ss, sgb, sgc, sgs, GLU, HAS_W, HAS_B, ACC,
    )  # fmt: skip
    mean_dz = tl.load(sums_ptr + c, mask=c_ok, other=0.0) * inv_n
    mean_dzx = tl.load(sums_ptr + C + c, mask=c_ok, other=0.0) * inv_n
    gx = (dz - mean_dz[None, :] - xhat * mean_dzx[None, :]) * scale[None, :]
    ptrs = gx_ptr + bb * sb + s[:, None] * ss + c[None, :] * sc
    tl.store(ptrs, cast_out(gx, gx_ptr.dtype.element_ty, RTNE_BF16), mask=mask)
    if GLU:
        mean_dz_b = tl.load(sums_ptr + CH + c, mask=c_ok, other=0.0) * inv_n
        mean_dzx_b = tl.load(sums_ptr + C + CH + c, mask=c_ok, other=0.0) * inv_n
        gx_b = (dz_b - mean_dz_b[None, :] - xhat_b * mean_dzx_b[None, :]) * scale_b[None, :]
        tl.store(ptrs + CH * sc, cast_out(gx_b, gx_ptr.dtype.element_ty, RTNE_BF16), mask=mask)


# --- launchers ----------------------------------------------------------------------------------


def _rows(x: Tensor) -> bool:
    """True for the 1 x C x (B H W) view (2-D x, channels-last x), False for B x C x S (NCHW)."""
    return x.dim() == 2 or _layout.memory_format(x) == torch.channels_last


def _view3(t: Tensor, rows: bool) -> tuple[int, int, int, int, int]:
    """(NB, S, sb, sc, ss) of the NB x C x S view described in the module docstring.

    Canonical strides from the shape: valid for any tensor contiguous in the chosen memory format
    (strides of size-1 dimensions never matter).
    """
    c = t.shape[1]
    if rows:
        return 1, t.numel() // c, 0, 1, c
    s = t.numel() // (t.shape[0] * c)
    return t.shape[0], s, c * s, s, 1


def _blocks(
    s: int, ch: int, ss: int, device: torch.device, tile: int = _TILE, max_c: int = 128
) -> tuple[int, int]:
    """(BLOCK_S, BLOCK_C): long along the contiguous axis, about ``tile`` values per tile, at most
    ``max_c`` channels when they are the contiguous axis.

    The interpreter sums a tile's column one row after the other (numpy along axis 0), so on CPU
    tiles stay short (64 values along S) to keep fp32 reductions as accurate as a tree sum.
    """
    max_s = 1024 if device.type == "cuda" else 64
    if ss == 1:
        block_s = max(2, min(triton.next_power_of_2(s), max_s))
        return block_s, max(2, min(triton.next_power_of_2(ch), tile // block_s))
    block_c = max(2, min(triton.next_power_of_2(ch), max_c))
    return max(2, min(triton.next_power_of_2(s), tile // block_c, max_s)), block_c


def grad_blocks(s: int, ch: int, ss: int, device: torch.device) -> tuple[int, int]:
    """The backward kernels' (BLOCK_S, BLOCK_C): ``_blocks``, channels-last within
    ``_GRAD_TILE`` values and ``_GRAD_MAX_C`` channels."""
    if ss == 1:
        return _blocks(s, ch, ss, device)
    return _blocks(s, ch, ss, device, _GRAD_TILE, _GRAD_MAX_C)


def _splits(tiles: int, cblocks: int, device: torch.device) -> tuple[int, int]:
    """(SPLIT, TILES_PER_SPLIT) for the reductions: ~4 programs per SM, every split non-empty."""
    if device.type == "cuda":
        want = triton.cdiv(4 * torch.cuda.get_device_properties(device).multi_processor_count,
                           cblocks)  # fmt: skip
    else:
        want = 3  # the interpreter: exercise the cross-split merge, stay small
    per = triton.cdiv(tiles, max(1, min(want, tiles)))
    return triton.cdiv(tiles, per), per


def _rtne(x: Tensor) -> bool:
    """bf16 under the interpreter: round stores by hand (see upsample_conv.cast_out)."""
    return x.dtype == torch.bfloat16 and x.device.type == "cpu"


def _acc(x: Tensor):
    return tl.float64 if x.dtype == torch.float64 else tl.float32


def _merge_blocks(device: torch.device) -> tuple[int, int]:
    """(BLOCK_P, BLOCK_C) of ``_merge_kernel``: 256 x 16 on the GPU; 64 partials per group
    under the interpreter (its sums run sequentially along the group), wide in channels (its
    cost is per program)."""
    return (256, 16) if device.type == "cuda" else (64, 64)


@launches_on_input_device
def merge_partials(part: Tensor) -> tuple[Tensor, Tensor]:
    """3 x SPLIT x C partials (mean | M2 | count per split; float32 or float64) -> the mean and
    biased variance, C each, in part's dtype: groups of BLOCK_P merged per launch until one is
    left (one launch for SPLIT <= BLOCK_P, two up to BLOCK_P**2)."""
    block_p, block_c = _merge_blocks(part.device)
    c = part.shape[2]
    acc = tl.float64 if part.dtype == torch.float64 else tl.float32
    mean, var = (part.new_empty(c) for _ in range(2))
    while True:
        split = part.shape[1]
        groups = triton.cdiv(split, block_p)
        final = groups == 1
        dst = mean if final else part.new_empty(3, groups, c)
        _merge_kernel[(groups, triton.cdiv(c, block_c))](
            part, dst, mean, var, split, c,
            FINAL=final, BLOCK_P=block_p, BLOCK_C=block_c, ACC=acc, num_warps=4,
        )  # fmt: skip
        if final:
            return mean, var
        part = dst


@launches_on_input_device
def batch_stats(x: Tensor) -> tuple[Tensor, Tensor]:
    """Per-channel mean and biased variance of dense x (``uses_triton_kernels(x)``), float32
    (float64 for float64 x): ``_stats_kernel`` partials, then ``merge_partials``."""
    c = x.shape[1]
    nb, s, sb, sc, ss = _view3(x, _rows(x))
    st_s, st_c = _blocks(s, c, ss, x.device)
    st_tiles = triton.cdiv(s, st_s)
    split, per = _splits(nb * st_tiles, triton.cdiv(c, st_c), x.device)
    part = torch.empty(3, split, c, device=x.device, dtype=_checks.acc_dtype(x.dtype))
    _stats_kernel[(split, triton.cdiv(c, st_c))](
        x, part, s, c, sb, sc, ss, st_tiles, nb * st_tiles, per, split,
        BLOCK_S=st_s, BLOCK_C=st_c, ACC=_acc(x), num_warps=_NUM_WARPS,
    )  # fmt: skip
    return merge_partials(part)


@launches_on_input_device
def apply(
    x: Tensor,
    residual: Tensor | None,
    weight: Tensor | None,
    bias: Tensor | None,
    mean: Tensor,
    var: Tensor,
    eps: float,
    mode: str,
) -> Tensor:
    """The normalising pass: glu(z) or z + residual with z = (x - mean) / sqrt(var + eps) weight
    + bias; dense x (``uses_triton_kernels(x)``), mean / var / weight / bias contiguous, C each."""
    fmt = _layout.memory_format(x)
    c = x.shape[1]
    ch = c // 2 if mode == "glu" else c
    y_shape = (x.shape[0], ch, *x.shape[2:])
    y = torch.empty(y_shape, device=x.device, dtype=x.dtype).contiguous(memory_format=fmt)
    if residual is not None:
        residual = residual.contiguous(memory_format=fmt)
    rows = _rows(x)
    nb, s, sb, sc, ss = _view3(x, rows)
    _, _, syb, syc, sys = _view3(y, rows)
    block_s, block_c = _blocks(s, ch, ss, x.device)
    n_stiles = triton.cdiv(s, block_s)
    _apply_kernel[(nb * n_stiles, triton.cdiv(ch, block_c))](
        x, x if residual is None else residual, y, mean, var,
        x if weight is None else weight, x if bias is None else bias,
        s, c, ch, sb, sc, ss, syb, syc, sys, n_stiles, eps,
        GLU=mode == "glu", HAS_W=weight is not None, HAS_B=bias is not None,
        BLOCK_S=block_s, BLOCK_C=block_c, ACC=_acc(x), RTNE_BF16=_rtne(x),
        num_warps=_NUM_WARPS,
    )  # fmt: skip
    return y


@launches_on_input_device
def batch_norm_act_forward(
    x: Tensor,
    residual: Tensor | None,
    weight: Tensor | None,
    bias: Tensor | None,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    training: bool,
    eps: float,
    mode: str,
) -> tuple[Tensor, Tensor, Tensor]:
    running_mean, running_var, weight, bias = (
        None if t is None else t.contiguous() for t in (running_mean, running_var, weight, bias)
    )
    if not uses_triton_kernels(x):
        return reference.batch_norm_act_forward(
            x, residual, weight, bias, running_mean, running_var, training, eps, mode
        )
    x = _layout.dense(x)  # the kernels assume dense strides (the public op already ensures it)
    if training:
        mean, var = batch_stats(x)
        return apply(x, residual, weight, bias, mean, var, eps, mode), mean, var
    y = apply(x, residual, weight, bias, running_mean, running_var, eps, mode)
    empty = x.new_empty(0, dtype=_checks.acc_dtype(x.dtype))
    return y, empty, empty.clone()


@launches_on_input_device
def batch_norm_act_backward(
    grad_y: Tensor,
    x: Tensor,
    weight: Tensor | None,
    bias: Tensor | None,
    mean: Tensor,
    var: Tensor,
    training: bool,
    eps: float,
    mode: str,
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    weight, bias, mean, var = (
        None if t is None else t.contiguous() for t in (weight, bias, mean, var)
    )
    if not uses_triton_kernels(x):
        return reference.batch_norm_act_backward(
            grad_y, x, weight, bias, mean, var, training, eps, mode
        )
    x = _layout.dense(x)
    fmt = _layout.memory_format(x)
    acc = _checks.acc_dtype(x.dtype)
    grad_y = grad_y.contiguous(memory_format=fmt)
    grad_x = torch.empty_like(x, memory_format=fmt)
    c = x.shape[1]
    glu = mode == "glu"
    ch = c // 2 if glu else c
    rows = _rows(x)
    nb, s, sb, sc, ss = _view3(x, rows)
    _, _, sgb, sgc, sgs = _view3(grad_y, rows)
    block_s, block_c = grad_blocks(s, ch, ss, x.device)
    n_stiles = triton.cdiv(s, block_s)
    cblocks = triton.cdiv(ch, block_c)
    split, per = _splits(nb * n_stiles, cblocks, x.device)
    part = torch.empty(2, split, c, device=x.device, dtype=acc)
    args = (grad_y, x, mean, var, x if weight is None else weight, x if bias is None else bias)
    flags = {"GLU": glu, "HAS_W": weight is not None, "HAS_B": bias is not None,
             "ACC": _acc(x), "RTNE_BF16": _rtne(x), "num_warps": _NUM_WARPS}  # fmt: skip
    _grad_reduce_kernel[(split, cblocks)](
        *args, part, grad_x, s, c, ch, sb, sc, ss, sgb, sgc, sgs, n_stiles, nb * n_stiles, per,
        split, eps, TRAINING=training, BLOCK_S=block_s, BLOCK_C=block_c, **flags,
    )  # fmt: skip
    sums = part.sum(1)  # 2 x C: sum dz, sum dz * xhat
    if training:
        _grad_apply_kernel[(nb * n_stiles, cblocks)](
            *args, sums, grad_x, s, c, ch, sb, sc, ss, sgb, sgc, sgs, n_stiles,
            1.0 / (nb * s), eps, BLOCK_S=block_s, BLOCK_C=block_c, **flags,
        )  # fmt: skip
    grad_weight = sums[1].to(weight.dtype, copy=True) if weight is not None else None
    grad_bias = sums[0].to(bias.dtype, copy=True) if bias is not None else None
    return grad_x, grad_weight, grad_bias


TRITON.register(  # every float dtype: float64 accumulates in float64
    reference.OP,
    batch_norm_act_forward,
    reference.backward_without_none(batch_norm_act_backward),
    supports=device_support,
)
