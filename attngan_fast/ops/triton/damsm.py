"""Triton backend of ``damsm_word_similarity`` (contract in ``attngan_fast/ops/damsm.py``).

Forward, flash-attention style: one program per (caption i, image j) pair, walking the R regions
of image j in tiles of BLOCK_R: scores (BLOCK_R x T, ``tl.dot`` over chunks of the D channels of
the caption's words), softmax over the caption's valid words, gamma1, then an online
softmax over regions (running max m_k and denominator l_k per word) that accumulates the D x T
region contexts c_k (``tl.dot``). Then cos(c_k, e_k) (denominator clamped at 1e-8) and the
log-sum-exp over valid words with gamma2 give S[j, i]. Nothing of size B x B x R x T exists.

Backward, by recomputation: one program per (image j, group of captions), looping over its
captions. Per pair it redoes the forward pass over the regions (c_k, m_k, l_k), forms the gradient
of the contexts (the reference's closed form), then a second pass over the regions recomputes the
two softmaxes and accumulates
  grad_img_local[j] += d_c @ alpha + words_i @ ds^T   (D x BLOCK_R per tile), and
  grad_words[i]     += img_local_j @ ds               (D x T),
using sum_r alpha[k, r] d_alpha[k, r] = d_c_k . c_k for the region-softmax backward. Every product
with K = D or output D x something runs in chunks of D_CHUNK channels (autotuned) read from
memory; d_c and the pair's grad_words live in a program-private D x T scratch (L1/L2-resident)
for that.
grad_img_local: each program owns the slice [group, j] of a G x B x D x R float32 buffer (written
at its first caption, then read-modified-written), summed over the G groups afterwards:
deterministic. grad_words: sums over all B images, so each pair adds its D x T tile with
``tl.atomic_add`` (B adds per element, spread over the run; order-dependent in the last bits only).
Memory: G x B x (D x R + 2 D x T) with G*B about two programs per SM, never B x B x R x T.

Precision: every ``tl.dot`` in 3xTF32 (``tf32x3``: about fp32 accuracy; inputs are converted to
fp32 on load, so bf16/fp16 take the same path); norms with ``tl.sqrt_rn``; softmaxes, cosines and
the log-sum-exp with the GPU's approximate ``tl.exp`` and ``/`` (within 2 units in the last place:
inside the parity budget under the GPU-numerics emulation of tests/ops/gpu_numerics.py).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from attngan_fast.ops import registry
from attngan_fast.ops.damsm import COS_EPS
from attngan_fast.ops.triton._common import (
    FP32_DOT_PRECISION,
    TRITON,
    check_dtype,
    device_support,
    dot_block,
    dtype_support,
    launches_on_input_device,
    resident_programs,
    single_config,
    sm80_support,
)

OP = "damsm_word_similarity"


def _configs(blocks: tuple[tuple[int, int, int], ...]) -> list[triton.Config]:
    """(BLOCK_R regions per tile, num_warps, D_CHUNK channels per tl.dot step) of each config."""
    return single_config(
        [triton.Config({"BLOCK_R": r, "D_CHUNK": c}, num_warps=w) for r, w, c in blocks]
    )


def _prune(configs, named_args, **kwargs):
    """Drop D chunks wider than the (padded) channels; keep the first config if none is left."""
    keep = [c for c in configs if c.kwargs["D_CHUNK"] <= kwargs["BLOCK_D"]]
    return keep or configs[:1]


def _tune(blocks: tuple[tuple[int, int, int], ...], **extra) -> dict:
    return {"configs": _configs(blocks), "key": ["D", "R", "BLOCK_T"],
            "prune_configs_by": {"early_config_prune": _prune}, **extra}  # fmt: skip


@triton.jit
def _load_words(e_ptr, i, D, T, BLOCK_D: tl.constexpr, BLOCK_T: tl.constexpr):
    """Caption i's word features, D x T as float32 (zeros in the padding)."""
    offs_d = tl.arange(0, BLOCK_D)
    offs_t = tl.arange(0, BLOCK_T)
    ptrs = e_ptr + tl.cast(i, tl.int64) * D * T + offs_d[:, None] * T + offs_t[None, :]
    mask = (offs_d < D)[:, None] & (offs_t < T)[None, :]
    return tl.load(ptrs, mask=mask, other=0.0).to(tl.float32)


@triton.jit
def _load_regions(v_ptr, j, r0, D, R, BLOCK_D: tl.constexpr, BLOCK_R: tl.constexpr):
    """Regions r0 .. r0 + BLOCK_R of image j, D x BLOCK_R as float32 (zeros in the padding)."""
    offs_d = tl.arange(0, BLOCK_D)
    offs_r = r0 + tl.arange(0, BLOCK_R)
    ptrs = v_ptr + tl.cast(j, tl.int64) * D * R + offs_d[:, None] * R + offs_r[None, :]
    mask = (offs_d < D)[:, None] & (offs_r < R)[None, :]
    return tl.load(ptrs, mask=mask, other=0.0).to(tl.float32)


@triton.jit
def _project(
    v_ptr,
    w_ptr,
    j,
    r0,
    D,
    R,
    T,
    BLOCK_R: tl.constexpr,
    BLOCK_T: tl.constexpr,
    BLOCK_D: tl.constexpr,
    D_CHUNK: tl.constexpr,
    PREC: tl.constexpr,
):
    """v^T w: regions r0 .. r0 + BLOCK_R of image j against a D x T tile at w_ptr (row stride T).

    Summed over chunks of D_CHUNK channels loaded straight from memory (L1/L2), so that no
    BLOCK_R x D operand is held in registers (it would be replicated across warps and spill); a
    rolled loop, as unrolling keeps every chunk's operands live at once (measured spills: see
    benchmarks/NOTES.md).
    Returns BLOCK_R x BLOCK_T float32.
    """
    offs_r = r0 + tl.arange(0, BLOCK_R)
    offs_t = tl.arange(0, BLOCK_T)
    v_base = v_ptr + tl.cast(j, tl.int64) * D * R
    out = tl.zeros((BLOCK_R, BLOCK_T), tl.float32)
    for d0 in range(0, BLOCK_D, D_CHUNK):
        offs_d = d0 + tl.arange(0, D_CHUNK)
        d_ok = offs_d < D
        v = tl.load(
            v_base + offs_d[:, None] * R + offs_r[None, :],
            mask=d_ok[:, None] & (offs_r < R)[None, :],
            other=0.0,
        ).to(tl.float32)
        w = tl.load(
            w_ptr + offs_d[:, None] * T + offs_t[None, :],
            mask=d_ok[:, None] & (offs_t < T)[None, :],
            other=0.0,
        ).to(tl.float32)
        out = tl.dot(tl.trans(v), w, out, input_precision=PREC)
    return out


@triton.jit
def _word_softmax(s, t_valid):
    """a = softmax over the valid words of the scores s: BLOCK_R x BLOCK_T (0 on invalid)."""
    s = tl.where(t_valid[None, :], s, float("-inf"))
    p = tl.exp(s - tl.max(s, axis=1)[:, None])
    return p / tl.sum(p, axis=1)[:, None]


@triton.jit
def _region_pass(
    v_ptr,
    e_ptr,
    i,
    j,
    t_valid,
    D,
    R,
    T,
    gamma1,
    BLOCK_D: tl.constexpr,
    BLOCK_T: tl.constexpr,
    BLOCK_R: tl.constexpr,
    D_CHUNK: tl.constexpr,
    PREC: tl.constexpr,
):
    """Contexts c (D x T), and the region softmax's max m (T) and denominator l (T) of one pair."""
    m = tl.full((BLOCK_T,), float("-inf"), tl.float32)
    l = tl.zeros((BLOCK_T,), tl.float32)
    acc = tl.zeros((BLOCK_D, BLOCK_T), tl.float32)
    e_base = e_ptr + tl.cast(i, tl.int64) * D * T
    for r0 in range(0, R, BLOCK_R):
        s = _project(v_ptr, e_base, j, r0, D, R, T, BLOCK_R, BLOCK_T, BLOCK_D, D_CHUNK, PREC)
        a = _word_softmax(s, t_valid)
        r_ok = (r0 + tl.arange(0, BLOCK_R)) < R
        z = tl.where(r_ok[:, None], gamma1 * a, float("-inf"))  # BLOCK_R x T
        m_new = tl.maximum(m, tl.max(z, axis=0))
        scale = tl.exp(m - m_new)
        pz = tl.exp(z - m_new[None, :])
        l = l * scale + tl.sum(pz, axis=0)
        v = _load_regions(v_ptr, j, r0, D, R, BLOCK_D, BLOCK_R)
        acc = tl.dot(v, pz, acc * scale[None, :], input_precision=PREC)
        m = m_new
    return acc / l[None, :], m, l


@triton.jit
def _cosines(c, e, t_valid, gamma2, EPS: tl.constexpr):
    """cos(c_k, e_k), |c_k|, |e_k| (T each) and softmax_k(gamma2 cos) over the valid words."""
    norm_c = tl.sqrt_rn(tl.sum(c * c, axis=0))
    norm_e = tl.sqrt_rn(tl.sum(e * e, axis=0))
    cos = tl.sum(c * e, axis=0) / tl.maximum(norm_c * norm_e, EPS)
    x = tl.where(t_valid, gamma2 * cos, float("-inf"))
    x_max = tl.max(x, axis=0)
    w = tl.exp(x - x_max)
    total = tl.sum(w, axis=0)
    return cos, norm_c, norm_e, w / total, x_max + tl.log(total)


# Configs ordered by how little they spill when compiled for sm_90 (see benchmarks/NOTES.md).
@triton.autotune(**_tune(((16, 8, 32), (16, 8, 64), (32, 8, 16), (32, 8, 32))))
@triton.jit
def _fwd_kernel(
    v_ptr,  # B x D x R image regions
    e_ptr,  # B x D x T words
    lens_ptr,  # B int64
    s_ptr,  # B x B float32 out, S[j, i]
    B,
    D,
    R,
    T,
    gamma1,
    gamma2,
    EPS: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_T: tl.constexpr,
    D_CHUNK: tl.constexpr,
    PREC: tl.constexpr,
    BLOCK_R: tl.constexpr,
):
    i = tl.program_id(0)  # caption (fastest: neighbouring programs share image j in L2)
    j = tl.program_id(1)  # image
    e = _load_words(e_ptr, i, D, T, BLOCK_D, BLOCK_T)
    t_valid = tl.arange(0, BLOCK_T) < tl.load(lens_ptr + i)
    c, _m, _l = _region_pass(
        v_ptr, e_ptr, i, j, t_valid, D, R, T, gamma1, BLOCK_D, BLOCK_T, BLOCK_R, D_CHUNK, PREC
    )
    _cos, _norm_c, _norm_e, _w, lse = _cosines(c, e, t_valid, gamma2, EPS)
    tl.store(s_ptr + tl.cast(j, tl.int64) * B + i, lse)


@triton.autotune(**_tune(((16, 8, 16), (16, 16, 16), (32, 8, 16), (16, 8, 64)),
                        reset_to_zero=["ge_ptr"]))  # fmt: skip
@triton.jit
def _bwd_kernel(
    gs_ptr,  # B x B grad of S
    v_ptr,  # B x D x R
    e_ptr,  # B x D x T
    lens_ptr,  # B int64
    gv_part_ptr,  # G x B x D x R float32 out: per caption group partial grad of img_local
    ge_ptr,  # B x D x T float32, zeroed: grad of words (atomic adds)
    scratch_ptr,  # G x B x 2 x D x T float32: each program's grad of the contexts, grad of words
    B,
    D,
    R,
    T,
    CAPTIONS_PER_GROUP,
    gamma1,
    gamma2,
    EPS: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_T: tl.constexpr,
    D_CHUNK: tl.constexpr,
    PREC: tl.constexpr,
    BLOCK_R: tl.constexpr,
):
    group = tl.program_id(0)
    j = tl.program_id(1)  # image
    first = group * CAPTIONS_PER_GROUP
    last = tl.minimum(first + CAPTIONS_PER_GROUP, B)
    offs_d = tl.arange(0, BLOCK_D)
    offs_t = tl.arange(0, BLOCK_T)
    d_ok = offs_d < D
    gv_base = gv_part_ptr + (tl.cast(group, tl.int64) * B + j) * D * R
    dc_base = scratch_ptr + (tl.cast(group, tl.int64) * B + j) * 2 * D * T
    ge_base = dc_base + D * T
    dt_offs = offs_d[:, None] * T + offs_t[None, :]
    dt_ok = d_ok[:, None] & (offs_t < T)[None, :]
    for i in range(first, last):
        e = _load_words(e_ptr, i, D, T, BLOCK_D, BLOCK_T)
        t_valid = offs_t < tl.load(lens_ptr + i)
        g = tl.load(gs_ptr + tl.cast(j, tl.int64) * B + i).to(tl.float32)
        c, m, l = _region_pass(
            v_ptr, e_ptr, i, j, t_valid, D, R, T, gamma1, BLOCK_D, BLOCK_T, BLOCK_R, D_CHUNK, PREC
        )
        cos, norm_c, norm_e, w, _ = _cosines(c, e, t_valid, gamma2, EPS)
        d_cos = g * gamma2 * w  # T, zero on invalid words
        den = norm_c * norm_e
        clamped = den <= EPS
        den = tl.maximum(den, EPS)
        scale_c = tl.where(clamped, 0.0, cos / (tl.maximum(norm_c, EPS) * tl.maximum(norm_c, EPS)))
        scale_e = tl.where(clamped, 0.0, cos / (tl.maximum(norm_e, EPS) * tl.maximum(norm_e, EPS)))
        d_c = d_cos[None, :] * (e / den[None, :] - scale_c[None, :] * c)  # D x T
        ge = d_cos[None, :] * (c / den[None, :] - scale_e[None, :] * e)  # D x T
        delta = tl.sum(d_c * c, axis=0)  # sum_r alpha[k, r] d_alpha[k, r]
        tl.debug_barrier()  # every thread is done with the previous caption's scratch
        tl.store(dc_base + dt_offs, d_c, mask=dt_ok)
        tl.store(ge_base + dt_offs, ge, mask=dt_ok)
        e_base = e_ptr + tl.cast(i, tl.int64) * D * T
        for r0 in range(0, R, BLOCK_R):
            # Scratch and grad_img_local tiles are read by other threads than wrote them: sync.
            tl.debug_barrier()
            s = _project(v_ptr, e_base, j, r0, D, R, T, BLOCK_R, BLOCK_T, BLOCK_D, D_CHUNK, PREC)
            a = _word_softmax(s, t_valid)
            offs_r = r0 + tl.arange(0, BLOCK_R)
            r_ok = offs_r < R
            z = tl.where(r_ok[:, None], gamma1 * a, float("-inf"))
            alpha = tl.exp(z - m[None, :]) / l[None, :]  # BLOCK_R x T
            d_alpha = _project(
                v_ptr, dc_base, j, r0, D, R, T, BLOCK_R, BLOCK_T, BLOCK_D, D_CHUNK, PREC
            )
            da = gamma1 * alpha * (d_alpha - delta[None, :])
            ds = a * (da - tl.sum(a * da, axis=1)[:, None])  # BLOCK_R x T
            seen = tl.full((BLOCK_R,), i, tl.int32) > first  # not this program's first caption
            for d0 in range(0, BLOCK_D, D_CHUNK):
                # grad_img_local^T for D_CHUNK channels: alpha @ d_c^T + ds @ e^T
                offs_c = d0 + tl.arange(0, D_CHUNK)
                tc_offs = offs_t[:, None] + offs_c[None, :] * T
                tc_ok = (offs_t < T)[:, None] & (offs_c < D)[None, :]
                d_c_t = tl.load(dc_base + tc_offs, mask=tc_ok, other=0.0)
                e_t = tl.load(e_base + tc_offs, mask=tc_ok, other=0.0).to(tl.float32)
                gv = tl.dot(alpha, d_c_t, input_precision=PREC)
                gv = tl.dot(ds, e_t, gv, input_precision=PREC)
                gv_ptrs = gv_base + offs_c[None, :] * R + offs_r[:, None]
                gv_ok = r_ok[:, None] & (offs_c < D)[None, :]
                gv += tl.load(gv_ptrs, mask=gv_ok & seen[:, None], other=0.0)
                tl.store(gv_ptrs, gv, mask=gv_ok)
                # grad_words for D_CHUNK channels += v @ ds (D_CHUNK x T), kept in the scratch
                v = tl.load(
                    v_ptr + tl.cast(j, tl.int64) * D * R + offs_c[:, None] * R + offs_r[None, :],
                    mask=(offs_c < D)[:, None] & r_ok[None, :],
                    other=0.0,
                ).to(tl.float32)
                ge_ptrs = ge_base + tl.trans(tc_offs)
                ge_ok = tl.trans(tc_ok)
                ge_c = tl.load(ge_ptrs, mask=ge_ok, other=0.0)
                tl.store(ge_ptrs, tl.dot(v, ds, ge_c, input_precision=PREC), mask=ge_ok)
        tl.debug_barrier()
        ge = tl.load(ge_base + dt_offs, mask=dt_ok, other=0.0)
        ge_ptrs = ge_ptr + tl.cast(i, tl.int64) * D * T + dt_offs
        tl.atomic_add(ge_ptrs, ge, mask=dt_ok, sem="relaxed")


# --- backend contract -------------------------------------------------------------------------


def supports(call: registry.Call) -> str | None:
    """The calls these kernels take (see ``_common``)."""
    return (
        device_support(call)
        or dtype_support(call)
        or sm80_support(call, "its tf32x3 tensor-core products")
    )


@launches_on_input_device
def damsm_word_similarity_forward(
    img_local: Tensor, words: Tensor, cap_lens: Tensor, gamma1: float, gamma2: float
) -> Tensor:
    """S (B x B float32, rows images, columns captions) in one launch of B x B programs."""
    check_dtype(OP, img_local, words)
    batch, dim, regions = img_local.shape
    n_words = words.shape[2]
    sim = torch.empty(batch, batch, device=img_local.device, dtype=torch.float32)
    _fwd_kernel[(batch, batch)](
        img_local,
        words,
        cap_lens,
        sim,
        batch,
        dim,
        regions,
        n_words,
        gamma1,
        gamma2,
        EPS=COS_EPS,
        BLOCK_D=dot_block(dim),
        BLOCK_T=dot_block(n_words),
        PREC=FP32_DOT_PRECISION,
    )
    return sim


def _caption_groups(batch: int, device: torch.device) -> tuple[int, int]:
    """(G groups, captions per group): about two programs per SM over the G x B grid."""
    groups = min(batch, max(1, triton.cdiv(resident_programs(device) // 2, batch)))
    per_group = triton.cdiv(batch, groups)
    return triton.cdiv(batch, per_group), per_group


@launches_on_input_device
def damsm_word_similarity_backward(
    grad_s: Tensor,
    img_local: Tensor,
    words: Tensor,
    cap_lens: Tensor,
    gamma1: float,
    gamma2: float,
) -> tuple[Tensor, Tensor]:
    """(grad_img_local B x D x R, grad_words B x D x T), recomputing the attention per pair."""
    check_dtype(OP, img_local, words)
    batch, dim, regions = img_local.shape
    n_words = words.shape[2]
    groups, per_group = _caption_groups(batch, img_local.device)
    f32 = {"device": img_local.device, "dtype": torch.float32}
    grad_v = torch.empty(groups, batch, dim, regions, **f32)
    grad_e = torch.zeros(batch, dim, n_words, **f32)
    scratch = torch.empty(groups, batch, 2, dim, n_words, **f32)
    _bwd_kernel[(groups, batch)](
        grad_s,
        img_local,
        words,
        cap_lens,
        grad_v,
        grad_e,
        scratch,
        batch,
        dim,
        regions,
        n_words,
        per_group,
        gamma1,
        gamma2,
        EPS=COS_EPS,
        BLOCK_D=dot_block(dim),
        BLOCK_T=dot_block(n_words),
        PREC=FP32_DOT_PRECISION,
    )
    return grad_v.sum(dim=0).to(img_local.dtype), grad_e.to(words.dtype)


TRITON.register(
    OP, damsm_word_similarity_forward, damsm_word_similarity_backward, supports=supports
)
