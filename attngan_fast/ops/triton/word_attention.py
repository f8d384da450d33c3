"""Triton backend of ``word_attention`` (contract in ``attngan_fast/ops/word_attention.py``).

Forward: one program per (tile of BLOCK_N regions, sample). The whole C x T word tile of the
sample stays in registers; scores (BLOCK_N x T, ``tl.dot``), the masked softmax over words in
float32, the context (BLOCK_N x C, ``tl.dot``) and the per-region log-sum-exp are computed in one
pass over the regions' features, so the only memory traffic is query in, context (+ attention map
when asked) and lse out. T and C are padded to powers of two (at least 16, for ``tl.dot``) and
masked. Query, context, grad_context and grad_query share one layout, passed as strides (sqb,
sqc, sqn): regions innermost (NCHW maps) or channels innermost (channels-last maps flattened in
place), so neither is copied.

Backward: one program per (chunk of regions, sample), looping over BLOCK_N tiles of its chunk. It
recomputes the probabilities from the saved lse, writes grad_query for its regions, and sums its
regions' contribution to grad_source (C x T) in registers; each program writes that partial sum
to a B x SPLIT x C x T buffer that ``torch.sum`` reduces afterwards. Deterministic (no atomics),
and the buffer is small because SPLIT is chosen to give only a few programs per SM.

Precision (``_common``'s policy): fp32 inputs multiply in 3xTF32 (``tf32x3``, about fp32
accuracy), bf16/fp16 inputs on the tensor cores with fp32 accumulation, fp32 probabilities and
gradients times low-precision tiles split into two halves; softmax, log-sum-exp and division
with the GPU's approximate ``tl.exp`` / ``/`` (within 2 units in the last place, exact for
``exp(0)``: inside the parity budget under the GPU-numerics emulation).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from attngan_fast.ops import _layout, registry
from attngan_fast.ops.triton._common import (
    FP32_DOT_PRECISION,
    TRITON,
    check_dtype,
    device_support,
    dot_block,
    dot_f32_lhs,
    dot_f32_rhs,
    dtype_support,
    launches_on_input_device,
    resident_programs,
    single_config,
    sm80_support,
    triton_interpret,
)

OP = "word_attention"
# Chunks of regions handled by one backward program are multiples of this (1 under the
# interpreter, so that tests see tiles that straddle chunk boundaries).
_CHUNK_ALIGN = 1 if triton_interpret() else 128


def _configs(blocks: tuple[tuple[int, int], ...]) -> list[triton.Config]:
    return single_config([triton.Config({"BLOCK_N": n}, num_warps=w) for n, w in blocks])


@triton.jit
def _valid_words(
    mask_ptr, b, offs_n, offs_t, B, N, T, HAS_MASK: tl.constexpr, LEGACY: tl.constexpr
):
    """Bool tile, broadcastable to BLOCK_N x BLOCK_T: word t is a real word for region n."""
    t_ok = offs_t < T
    if HAS_MASK:
        if LEGACY:  # region n of sample b reads the mask of sample (b*N + n) mod B
            rows = (b * N + offs_n) % B
            pad = tl.load(
                mask_ptr + rows[:, None] * T + offs_t[None, :], mask=t_ok[None, :], other=1
            )
        else:
            pad = tl.load(mask_ptr + b * T + offs_t, mask=t_ok, other=1)[None, :]
        valid = (pad == 0) & t_ok[None, :]
    else:
        valid = t_ok[None, :]
    return valid


@triton.autotune(
    configs=_configs(((32, 8), (64, 4), (128, 8), (128, 4), (256, 8))),
    key=["N", "BLOCK_C", "BLOCK_T", "NEED_ATTN"],
)
@triton.jit
def _fwd_kernel(
    q_ptr,  # B x C x N
    s_ptr,  # B x C x T
    mask_ptr,  # B x T uint8 (1 = padding)
    ctx_ptr,  # B x C x N
    attn_ptr,  # B x T x N
    lse_ptr,  # B x N float32
    B,
    C,
    N,
    T,
    sqb,  # strides of query and context
    sqc,
    sqn,
    HAS_MASK: tl.constexpr,
    LEGACY: tl.constexpr,
    NEED_ATTN: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_T: tl.constexpr,
    PREC: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    pid_n = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_c = tl.arange(0, BLOCK_C)
    offs_t = tl.arange(0, BLOCK_T)
    n_ok, c_ok, t_ok = offs_n < N, offs_c < C, offs_t < T

    src = tl.load(
        s_ptr + b * C * T + offs_c[:, None] * T + offs_t[None, :],
        mask=c_ok[:, None] & t_ok[None, :],
        other=0.0,
    )  # C x T
    nc_off = b * sqb + offs_c[None, :] * sqc + offs_n[:, None] * sqn
    nc_ok = n_ok[:, None] & c_ok[None, :]
    q = tl.load(q_ptr + nc_off, mask=nc_ok, other=0.0)  # N x C
    scores = tl.dot(q, src, input_precision=PREC)  # N x T, float32
    valid = _valid_words(mask_ptr, b, offs_n, offs_t, B, N, T, HAS_MASK, LEGACY)
    scores = tl.where(valid, scores, float("-inf"))

    row_max = tl.max(scores, axis=1)
    empty = row_max == float("-inf")  # no valid word: zeros, lse = +inf
    row_max = tl.where(empty, 0.0, row_max)
    p = tl.exp(scores - row_max[:, None])
    denom = tl.sum(p, axis=1)
    denom = tl.where(empty, 1.0, denom)
    p = p / denom[:, None]
    lse = tl.where(empty, float("inf"), row_max + tl.log(denom))

    p_lo = p.to(ctx_ptr.dtype.element_ty)
    ctx = tl.dot(p_lo, tl.trans(src), input_precision=PREC)  # N x C
    tl.store(ctx_ptr + nc_off, ctx.to(ctx_ptr.dtype.element_ty), mask=nc_ok)
    tl.store(lse_ptr + b * N + offs_n, lse, mask=n_ok)
    if NEED_ATTN:
        tl.store(
            attn_ptr + b * T * N + offs_t[None, :] * N + offs_n[:, None],
            p_lo,
            mask=n_ok[:, None] & t_ok[None, :],
        )


@triton.autotune(
    configs=_configs(((16, 4), (32, 4), (32, 8), (64, 8))),
    key=["N", "BLOCK_C", "BLOCK_T", "HAS_GRAD_ATTN"],
)
@triton.jit
def _bwd_kernel(
    gc_ptr,  # B x C x N  grad of context
    ga_ptr,  # B x T x N  grad of attn (when HAS_GRAD_ATTN)
    q_ptr,  # B x C x N
    s_ptr,  # B x C x T
    mask_ptr,  # B x T uint8
    lse_ptr,  # B x N float32
    gq_ptr,  # B x C x N  grad of query (out)
    gs_part_ptr,  # B x SPLIT x C x T float32 partial grads of source (out)
    B,
    C,
    N,
    T,
    sqb,  # strides of query, grad_context and grad_query
    sqc,
    sqn,
    CHUNK,
    SPLIT,
    HAS_MASK: tl.constexpr,
    LEGACY: tl.constexpr,
    HAS_GRAD_ATTN: tl.constexpr,
    LOWP: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_T: tl.constexpr,
    PREC: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    pid = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    lo = pid * CHUNK
    hi = tl.minimum(lo + CHUNK, N)
    offs_c = tl.arange(0, BLOCK_C)
    offs_t = tl.arange(0, BLOCK_T)
    c_ok, t_ok = offs_c < C, offs_t < T
    ct_ok = c_ok[:, None] & t_ok[None, :]
    src = tl.load(
        s_ptr + b * C * T + offs_c[:, None] * T + offs_t[None, :], mask=ct_ok, other=0.0
    )  # C x T
    src_t = tl.trans(src)
    grad_src = tl.zeros((BLOCK_C, BLOCK_T), dtype=tl.float32)
    for start in range(lo, hi, BLOCK_N):
        offs_n = start + tl.arange(0, BLOCK_N)
        n_ok = offs_n < hi
        nc_off = b * sqb + offs_c[None, :] * sqc + offs_n[:, None] * sqn
        nc_ok = n_ok[:, None] & c_ok[None, :]
        q = tl.load(q_ptr + nc_off, mask=nc_ok, other=0.0)  # N x C
        g = tl.load(gc_ptr + nc_off, mask=nc_ok, other=0.0)  # N x C
        scores = tl.dot(q, src, input_precision=PREC)
        valid = _valid_words(mask_ptr, b, offs_n, offs_t, B, N, T, HAS_MASK, LEGACY)
        lse = tl.load(lse_ptr + b * N + offs_n, mask=n_ok, other=float("inf"))
        p = tl.exp(tl.where(valid, scores, float("-inf")) - lse[:, None])  # 0 when masked/empty
        dp = tl.dot(g, src, input_precision=PREC)  # N x T
        if HAS_GRAD_ATTN:
            dp += tl.load(
                ga_ptr + b * T * N + offs_t[None, :] * N + offs_n[:, None],
                mask=n_ok[:, None] & t_ok[None, :],
                other=0.0,
            ).to(tl.float32)
        ds = p * (dp - tl.sum(p * dp, axis=1)[:, None])  # N x T
        gq = dot_f32_lhs(ds, src_t, tl.zeros((BLOCK_N, BLOCK_C), tl.float32), LOWP, PREC)
        tl.store(gq_ptr + nc_off, gq.to(gq_ptr.dtype.element_ty), mask=nc_ok)
        grad_src = dot_f32_rhs(tl.trans(g), p, grad_src, LOWP, PREC)
        grad_src = dot_f32_rhs(tl.trans(q), ds, grad_src, LOWP, PREC)
    part = gs_part_ptr + (b * SPLIT + pid) * C * T
    tl.store(part + offs_c[:, None] * T + offs_t[None, :], grad_src, mask=ct_ok)


# --- backend contract -------------------------------------------------------------------------


def supports(call: registry.Call) -> str | None:
    """The calls these kernels take (see ``_common``), but not bfloat16 under the interpreter."""
    why = device_support(call) or dtype_support(call)
    if why is None and call.device.type == "cpu" and call.dtype == torch.bfloat16:
        why = "the Triton interpreter multiplies bfloat16 tiles wrongly (as integers)"
    return why or sm80_support(call, "its tf32x3 and bfloat16 tensor-core products")


def _check_inputs(query: Tensor, source: Tensor) -> None:
    check_dtype(OP, query, source)
    if triton_interpret() and query.dtype == torch.bfloat16:
        raise TypeError(
            f"{OP}: the Triton interpreter (TRITON_INTERPRET=1) multiplies bfloat16 tiles wrongly "
            "(it treats them as integers); use float16/float32 here, or backend='torch' on the CPU"
        )


def _mask_arg(mask: Tensor | None, fallback: Tensor) -> Tensor:
    return fallback if mask is None else mask.view(torch.uint8)


@launches_on_input_device
def word_attention_forward(
    query: Tensor, source: Tensor, mask: Tensor | None, need_attn: bool, legacy_mask: bool
) -> tuple[Tensor, Tensor, Tensor]:
    """(context B x C x N, attn B x T x N or empty, lse B x N float32) in one kernel launch."""
    _check_inputs(query, source)
    batch, channels, n = query.shape
    words = source.shape[2]
    context = torch.empty_like(query)  # query's layout (strides)
    attn = query.new_empty(batch, words, n) if need_attn else query.new_empty(0)
    lse = torch.empty(batch, n, device=query.device, dtype=torch.float32)

    def grid(meta):
        return (triton.cdiv(n, meta["BLOCK_N"]), batch)

    _fwd_kernel[grid](
        query,
        source,
        _mask_arg(mask, query),
        context,
        attn if need_attn else context,
        lse,
        batch,
        channels,
        n,
        words,
        *query.stride(),
        HAS_MASK=mask is not None,
        LEGACY=legacy_mask,
        NEED_ATTN=need_attn,
        BLOCK_C=dot_block(channels),
        BLOCK_T=dot_block(words),
        PREC=FP32_DOT_PRECISION,
    )
    return context, attn, lse


def _split(batch: int, n: int, device: torch.device) -> tuple[int, int]:
    """(SPLIT chunks of regions per sample, CHUNK regions each) for a few programs per SM."""
    per_sample = max(1, triton.cdiv(resident_programs(device), batch))
    chunk = triton.cdiv(n, min(per_sample, triton.cdiv(n, _CHUNK_ALIGN)))
    chunk = triton.cdiv(chunk, _CHUNK_ALIGN) * _CHUNK_ALIGN
    return triton.cdiv(n, chunk), chunk


@launches_on_input_device
def word_attention_backward(
    grad_context: Tensor,
    grad_attn: Tensor | None,
    query: Tensor,
    source: Tensor,
    mask: Tensor | None,
    lse: Tensor,
    legacy_mask: bool,
) -> tuple[Tensor, Tensor]:
    """(grad_query B x C x N, grad_source B x C x T): one kernel, then a sum over SPLIT partials.
    grad_context has query's strides (the op's autograd brings it there)."""
    _check_inputs(query, source)
    grad_context = _layout.like(grad_context, query)  # no copy when it already is
    batch, channels, n = query.shape
    words = source.shape[2]
    split, chunk = _split(batch, n, query.device)
    grad_query = torch.empty_like(query)
    partial = torch.empty(batch, split, channels, words, device=query.device, dtype=torch.float32)
    _bwd_kernel[(split, batch)](
        grad_context,
        grad_context if grad_attn is None else grad_attn,
        query,
        source,
        _mask_arg(mask, query),
        lse,
        grad_query,
        partial,
        batch,
        channels,
        n,
        words,
        *query.stride(),
        chunk,
        split,
        HAS_MASK=mask is not None,
        LEGACY=legacy_mask,
        HAS_GRAD_ATTN=grad_attn is not None,
        LOWP=query.dtype != torch.float32,
        BLOCK_C=dot_block(channels),
        BLOCK_T=dot_block(words),
        PREC=FP32_DOT_PRECISION,
    )
    return grad_query, partial.sum(dim=1).to(source.dtype)


TRITON.register(OP, word_attention_forward, word_attention_backward, supports=supports)
