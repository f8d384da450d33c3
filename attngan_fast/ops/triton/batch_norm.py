"""Triton backend of ``batch_norm_act`` (BatchNorm + GLU, BatchNorm + residual add).

Every tensor is seen as NB x C x S with strides (sb, sc, ss), per-channel statistics running over
NB and S: NCHW-contiguous 4-D / 3-D x as B x C x (H W) (S contiguous); channels-last 4-D x as
1 x C x (B H W) and 2-D x (B x C) as 1 x C x B (C contiguous). y, grad_y, grad_x and the residual
use x's memory format (grad_y is copied to it when it arrives in the other one).

Kernels (accumulation in fp32; fp64 for fp64 x):

* training forward, pass 1 ``_stats_kernel``: each program merges (count, mean, M2) of its tiles of
  BLOCK_S x BLOCK_C values (exact two-pass inside a tile, Chan's formula across tiles) -> per-split
  partials, SPLIT x C.
* forward, pass 2 ``_apply_kernel``: merges the partials of its channels (Chan again), normalises,
  applies the affine and the GLU (reads C, writes C/2 channels) or adds the residual; the programs
  of the first tile store the batch mean and biased variance. Eval mode: this pass only, with the
  running statistics.
* backward, pass 1 ``_grad_reduce_kernel``: recomputes z (and the GLU gate) from x and grad_y in one
  read, per-split partial sums of dz and dz * xhat (= grad_bias and grad_weight once summed); in
  eval mode it also writes grad_x (no second pass needed).
* backward, pass 2 ``_grad_apply_kernel`` (training): grad_x = w invstd (dz - sum dz / N - xhat
  sum(dz xhat) / N).

Falls back to the torch backend for tensors of 2**31 elements or more (int32 offsets).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from attngan_fast.ops import _backend, _checks, _layout
from attngan_fast.ops import batch_norm as reference
from attngan_fast.ops.triton.upsample_conv import cast_out

_INT32_LIMIT = 2**31
_TILE = 4096  # values per tile (per half for GLU)
_NUM_WARPS = 8  # 16 values per thread and tensor: no register spills on sm_90 (GLU backward)


def batch_norm_act_supported(device: torch.device) -> str | None:
    if device.type == "cuda" or (device.type == "cpu" and _backend.triton_interpret()):
        return None
    return f"the triton kernels need CUDA tensors or TRITON_INTERPRET=1 (got {device.type})"


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
def _merged_stats(part_ptr, c, c_ok, SPLIT, C, ACC: tl.constexpr):
    """Chan-merge the SPLIT partials (count, mean, M2) of channels c -> (mean, biased var)."""
    n = tl.zeros(c.shape, dtype=ACC)
    mean = tl.zeros(c.shape, dtype=ACC)
    m2 = tl.zeros(c.shape, dtype=ACC)
    for i in range(0, SPLIT):
        n_i = tl.load(part_ptr + (2 * SPLIT + i) * C + c, mask=c_ok, other=1.0)
        mean_i = tl.load(part_ptr + i * C + c, mask=c_ok, other=0.0)
        m2_i = tl.load(part_ptr + (SPLIT + i) * C + c, mask=c_ok, other=0.0)
        n_new = n + n_i
        delta = mean_i - mean
        mean += delta * (n_i / n_new)
        m2 += m2_i + delta * delta * (n * n_i / n_new)
        n = n_new
    return mean, m2 / n


@triton.jit
def _channel_params(
    part_ptr, rm_ptr, rv_ptr, w_ptr, b_ptr, c, c_ok, SPLIT, C, eps,
    TRAINING: tl.constexpr, HAS_W: tl.constexpr, HAS_B: tl.constexpr, ACC: tl.constexpr,
):  # fmt: skip
    """(mean, var, invstd, weight, bias) of channels c; weight 1 and bias 0 when absent."""
    if TRAINING:
        mean, var = _merged_stats(part_ptr, c, c_ok, SPLIT, C, ACC)
    else:
        mean = tl.load(rm_ptr + c, mask=c_ok, other=0.0).to(ACC)
        var = tl.load(rv_ptr + c, mask=c_ok, other=1.0).to(ACC)
    invstd = 1.0 / tl.sqrt(var + eps)
    weight = tl.full(c.shape, 1.0, ACC)
    if HAS_W:
        weight = tl.load(w_ptr + c, mask=c_ok, other=1.0).to(ACC)
    bias = tl.zeros(c.shape, dtype=ACC)
    if HAS_B:
        bias = tl.load(b_ptr + c, mask=c_ok, other=0.0).to(ACC)
    return mean, var, invstd, weight, bias


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
        mean_t = tl.sum(xt, axis=0) / n_t
        d = tl.where(mask, xt - mean_t[None, :], 0.0)
        m2_t = tl.sum(d * d, axis=0)
        n_new = n + n_t
        delta = mean_t - mean
        mean += delta * (n_t / n_new)
        m2 += m2_t + delta * delta * (n * n_t / n_new)
        n = n_new
    c = c0 + tl.arange(0, BLOCK_C)
    c_ok = c < C
    tl.store(part_ptr + split * C + c, mean, mask=c_ok)
    tl.store(part_ptr + (SPLIT + split) * C + c, m2, mask=c_ok)
    tl.store(part_ptr + (2 * SPLIT + split) * C + c, n, mask=c_ok)


@triton.jit
def _apply_kernel(
    x_ptr, r_ptr, y_ptr, part_ptr, rm_ptr, rv_ptr, w_ptr, b_ptr, mean_ptr, var_ptr,
    S, C, CH, sb, sc, ss, syb, syc, sys, N_STILES, SPLIT, eps,
    GLU: tl.constexpr, TRAINING: tl.constexpr, HAS_W: tl.constexpr, HAS_B: tl.constexpr,
    BLOCK_S: tl.constexpr, BLOCK_C: tl.constexpr, ACC: tl.constexpr, RTNE_BF16: tl.constexpr,
):  # fmt: skip
    """y = glu(z) (channels c < CH = C / 2 read c and c + CH) or y = z + residual, where
    z = (x - mean) invstd weight + bias."""
    u = tl.program_id(0)
    bb = u // N_STILES
    s0 = (u % N_STILES) * BLOCK_S
    s, c, mask, c_ok = _tile(s0, tl.program_id(1) * BLOCK_C, BLOCK_S, BLOCK_C, S, CH)
    mean, var, invstd, weight, bias = _channel_params(
        part_ptr, rm_ptr, rv_ptr, w_ptr, b_ptr, c, c_ok, SPLIT, C, eps,
        TRAINING, HAS_W, HAS_B, ACC,
    )  # fmt: skip
    z = (_load(x_ptr, bb, s, c, mask, sb, sc, ss, ACC) - mean[None, :]) * (invstd * weight)[None, :]
    z += bias[None, :]
    if GLU:
        cb = c + CH
        mean_b, var_b, invstd_b, weight_b, bias_b = _channel_params(
            part_ptr, rm_ptr, rv_ptr, w_ptr, b_ptr, cb, c_ok, SPLIT, C, eps,
            TRAINING, HAS_W, HAS_B, ACC,
        )  # fmt: skip
        zb = _load(x_ptr, bb, s, cb, mask, sb, sc, ss, ACC) - mean_b[None, :]
        zb = zb * (invstd_b * weight_b)[None, :] + bias_b[None, :]
        y = z * tl.sigmoid(zb)
    else:
        y = z + _load(r_ptr, bb, s, c, mask, sb, sc, ss, ACC)
    y_ptrs = y_ptr + bb * syb + s[:, None] * sys + c[None, :] * syc
    tl.store(y_ptrs, cast_out(y, y_ptr.dtype.element_ty, RTNE_BF16), mask=mask)
    if TRAINING:
        if u == 0:
            tl.store(mean_ptr + c, mean, mask=c_ok)
            tl.store(var_ptr + c, var, mask=c_ok)
            if GLU:
                tl.store(mean_ptr + cb, mean_b, mask=c_ok)
                tl.store(var_ptr + cb, var_b, mask=c_ok)


@triton.jit
def _dz_xhat(
    g_ptr, x_ptr, mean_ptr, var_ptr, w_ptr, b_ptr, bb, s, c, mask, c_ok, CH, eps,
    sb, sc, ss, sgb, sgc, sgs,
    GLU: tl.constexpr, HAS_W: tl.constexpr, HAS_B: tl.constexpr, ACC: tl.constexpr,
):  # fmt: skip
    """Recompute, for channels c (and c + CH for GLU): dz = dL/dz, xhat and weight * invstd."""
    g = _load(g_ptr, bb, s, c, mask, sgb, sgc, sgs, ACC)
    mean, _, invstd, weight, bias = _channel_params(
        mean_ptr, mean_ptr, var_ptr, w_ptr, b_ptr, c, c_ok, 0, 0, eps, False, HAS_W, HAS_B, ACC
    )
    xhat = (_load(x_ptr, bb, s, c, mask, sb, sc, ss, ACC) - mean[None, :]) * invstd[None, :]
    if GLU:
        cb = c + CH
        mean_b, _, invstd_b, weight_b, bias_b = _channel_params(
            mean_ptr, mean_ptr, var_ptr, w_ptr, b_ptr, cb, c_ok, 0, 0, eps, False, HAS_W, HAS_B,
            ACC,
        )  # fmt: skip
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


def _blocks(s: int, ch: int, ss: int, device: torch.device) -> tuple[int, int]:
    """(BLOCK_S, BLOCK_C): long along the contiguous axis, about _TILE values per tile.

    The interpreter sums a tile's column one row after the other (numpy along axis 0), so on CPU
    tiles stay short (64 values along S) to keep fp32 reductions as accurate as a tree sum.
    """
    max_s = 1024 if device.type == "cuda" else 64
    if ss == 1:
        block_s = max(2, min(triton.next_power_of_2(s), max_s))
        return block_s, max(2, min(triton.next_power_of_2(ch), _TILE // block_s))
    block_c = max(2, min(triton.next_power_of_2(ch), 128))
    return max(2, min(triton.next_power_of_2(s), _TILE // block_c, max_s)), block_c


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
    fmt = _layout.memory_format(x)
    acc = _checks.acc_dtype(x.dtype)
    c = x.shape[1]
    glu = mode == "glu"
    ch = c // 2 if glu else c
    y_shape = (x.shape[0], ch, *x.shape[2:])
    y = torch.empty(y_shape, device=x.device, dtype=x.dtype).contiguous(memory_format=fmt)
    if residual is not None:
        residual = residual.contiguous(memory_format=fmt)
    rows = _rows(x)
    nb, s, sb, sc, ss = _view3(x, rows)
    _, _, syb, syc, sys = _view3(y, rows)
    block_s, block_c = _blocks(s, ch, ss, x.device)
    n_stiles = triton.cdiv(s, block_s)
    tiles = nb * n_stiles
    mean, var, part = (x.new_empty(0, dtype=acc) for _ in range(3))
    split = 1
    if training:
        st_s, st_c = _blocks(s, c, ss, x.device)
        st_tiles = triton.cdiv(s, st_s)
        split, per = _splits(nb * st_tiles, triton.cdiv(c, st_c), x.device)
        part = torch.empty(3, split, c, device=x.device, dtype=acc)
        _stats_kernel[(split, triton.cdiv(c, st_c))](
            x, part, s, c, sb, sc, ss, st_tiles, nb * st_tiles, per, split,
            BLOCK_S=st_s, BLOCK_C=st_c, ACC=_acc(x), num_warps=_NUM_WARPS,
        )  # fmt: skip
        mean = torch.empty(c, device=x.device, dtype=acc)
        var = torch.empty(c, device=x.device, dtype=acc)
    _apply_kernel[(tiles, triton.cdiv(ch, block_c))](
        x, x if residual is None else residual, y, part,
        x if running_mean is None else running_mean, x if running_var is None else running_var,
        x if weight is None else weight, x if bias is None else bias,
        mean if training else x, var if training else x,
        s, c, ch, sb, sc, ss, syb, syc, sys, n_stiles, split, eps,
        GLU=glu, TRAINING=training, HAS_W=weight is not None, HAS_B=bias is not None,
        BLOCK_S=block_s, BLOCK_C=block_c, ACC=_acc(x), RTNE_BF16=_rtne(x),
        num_warps=_NUM_WARPS,
    )  # fmt: skip
    return y, mean, var


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
    block_s, block_c = _blocks(s, ch, ss, x.device)
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
