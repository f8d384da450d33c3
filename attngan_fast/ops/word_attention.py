"""``word_attention``: G's word-region attention (``GlobalAttentionGeneral`` of the original
AttnGAN code, taoxugit/AttnGAN ``code/GlobalAttention.py``; Xu et al., CVPR 2018, section 3.1).

For each sample b and region n of the image features, a softmax over the T words of the
scores ``query[b, :, n] . source[b, :, t]`` (masked words excluded) weights the word features:

    context[b, c, n] = sum_t attn[b, t, n] * source[b, c, t]

Shapes: query B x C x N (N = H*W regions), source B x C x T (words already projected to C),
mask B x T bool (True = padding) or None. A region whose words are all masked gets zeros.
With ``legacy_mask=True`` region n of sample b uses the mask of sample (b*N + n) mod B, which is
what the original code's ``mask.repeat(N, 1)`` did (issue #93 of the original repository).

``query`` may have its regions or its channels innermost (a channels-last feature map flattened
to B x C x (H W) is the second, and is not copied); the kernel backends return ``context`` and
``grad_query`` in ``query``'s layout.

This module defines the op (``registry.define_op``) and registers two backends: ``reference``
(``word_attention_reference``, differentiated by autograd) and ``torch`` (the same forward and
a closed-form backward, as kernels). The kernels' contract (source, mask, attn, lse and
grad_attn contiguous; query dense with regions or channels innermost, and context,
grad_context and grad_query in query's layout):

* ``forward(query, source, mask, need_attn, legacy_mask)``
  -> ``(context B x C x N, attn B x T x N or empty, lse B x N)``; ``lse`` is float32
  (float64 for float64 inputs): the log-sum-exp of each region's masked scores, ``+inf`` for a
  region with no valid word.
* ``backward(grad_context, grad_attn | None, query, source, mask, lse, legacy_mask)``
  -> ``(grad_query, grad_source)``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from attngan_fast.ops import _checks, _layout, registry

OP = "word_attention"


def row_mask(mask: Tensor, n_regions: int, legacy_mask: bool) -> Tensor:
    """Mask of every (sample, region) row, B x N x T (bool), per sample or as the original did."""
    batch = mask.shape[0]
    if not legacy_mask:
        return mask[:, None, :].expand(batch, n_regions, mask.shape[1])
    rows = torch.arange(batch, device=mask.device)[:, None] * n_regions
    rows = rows + torch.arange(n_regions, device=mask.device)[None, :]
    return mask[rows % batch]


def _masked_scores(query: Tensor, source: Tensor, mask: Tensor | None, legacy_mask: bool) -> Tensor:
    """Scores B x N x T in the accumulation dtype, masked words at -inf."""
    scores = torch.bmm(query.transpose(1, 2), source).to(_checks.acc_dtype(query.dtype))
    if mask is not None:
        scores = scores.masked_fill(row_mask(mask, query.shape[2], legacy_mask), float("-inf"))
    return scores


def word_attention_reference(
    query: Tensor,
    source: Tensor,
    mask: Tensor | None,
    need_attn: bool = True,
    legacy_mask: bool = False,
) -> tuple[Tensor, Tensor | None]:
    """Pure-PyTorch word attention (differentiable by autograd; the oracle and compile baseline).

    Scores in the input dtype as eager PyTorch computes them, softmax in float32 (float64 inputs:
    float64 throughout).
    Returns ``(context B x C x N, attn B x T x N or None)``.
    """
    scores = _masked_scores(query, source, mask, legacy_mask)
    attn = torch.softmax(scores, dim=-1)
    if mask is not None:  # a region with no valid word: softmax gives NaN, the op gives zeros
        attn = attn.masked_fill(torch.isinf(scores).all(dim=-1, keepdim=True), 0.0)
    attn = attn.to(query.dtype)
    context = torch.bmm(source, attn.transpose(1, 2))
    return context, (attn.transpose(1, 2) if need_attn else None)


# --- torch backend: the kernels' contract in PyTorch ----------------------------------------


def word_attention_forward(
    query: Tensor, source: Tensor, mask: Tensor | None, need_attn: bool, legacy_mask: bool
) -> tuple[Tensor, Tensor, Tensor]:
    scores = _masked_scores(query, source, mask, legacy_mask)
    lse = torch.logsumexp(scores, dim=-1)
    lse = torch.where(torch.isneginf(lse), torch.full_like(lse, float("inf")), lse)
    attn = torch.exp(scores - lse[..., None]).to(query.dtype)  # B x N x T
    context = _layout.like(torch.bmm(source, attn.transpose(1, 2)), query)
    attn_out = attn.transpose(1, 2).contiguous() if need_attn else query.new_empty(0)
    return context, attn_out, lse


def word_attention_backward(
    grad_context: Tensor,
    grad_attn: Tensor | None,
    query: Tensor,
    source: Tensor,
    mask: Tensor | None,
    lse: Tensor,
    legacy_mask: bool,
) -> tuple[Tensor, Tensor]:
    acc = _checks.acc_dtype(query.dtype)
    q, s, g = query.to(acc), source.to(acc), grad_context.to(acc)
    # the forward's scores, rounded as it rounded them (bf16 / fp16 products), so p is its attn
    scores = _masked_scores(query, source, mask, legacy_mask)
    p = torch.exp(scores - lse[..., None])  # B x N x T, zero on masked words and empty rows
    dp = torch.bmm(g.transpose(1, 2), s)  # B x N x T
    if grad_attn is not None:
        dp = dp + grad_attn.to(acc).transpose(1, 2)
    ds = p * (dp - (p * dp).sum(dim=-1, keepdim=True))
    grad_query = torch.bmm(s, ds.transpose(1, 2))  # B x C x N
    grad_source = torch.bmm(g, p) + torch.bmm(q, ds)  # B x C x T
    return _layout.like(grad_query.to(query.dtype), query), grad_source.to(source.dtype)


# --- the op and its registrations -----------------------------------------------------------


def _fake_forward(
    query: Tensor, source: Tensor, mask: Tensor | None, need_attn: bool, legacy_mask: bool
) -> tuple[Tensor, Tensor, Tensor]:
    batch, _, n = query.shape
    attn = query.new_empty(batch, source.shape[2], n) if need_attn else query.new_empty(0)
    return (
        torch.empty_like(query),
        attn,
        query.new_empty(batch, n, dtype=_checks.acc_dtype(query.dtype)),
    )


def _fake_backward(
    grad_context: Tensor,
    grad_attn: Tensor | None,
    query: Tensor,
    source: Tensor,
    mask: Tensor | None,
    lse: Tensor,
    legacy_mask: bool,
) -> tuple[Tensor, Tensor]:
    return torch.empty_like(query), torch.empty_like(source)


def _setup_context(ctx, inputs, output):
    query, source, mask, need_attn, legacy_mask = inputs
    ctx.save_for_backward(query, source, mask, output[2])
    ctx.need_attn, ctx.legacy_mask = need_attn, legacy_mask
    ctx.mark_non_differentiable(output[2])


def _backward(impl, ctx, grad_context, grad_attn, _grad_lse):
    query, source, mask, lse = ctx.saved_tensors
    if grad_context is None:
        grad_context = torch.zeros_like(query)
    grad_attn = grad_attn.contiguous() if (ctx.need_attn and grad_attn is not None) else None
    grad_query, grad_source = impl.backward_op(
        _layout.like(grad_context, query), grad_attn, query, source, mask, lse, ctx.legacy_mask
    )
    return grad_query, grad_source, None, None, None


registry.define_op(
    OP, _fake_forward, _fake_backward, _setup_context, _backward, reference=word_attention_reference
)
registry.TORCH.register(OP, word_attention_forward, word_attention_backward)


# --- public op --------------------------------------------------------------------------------


def word_attention(
    query: Tensor,
    source: Tensor,
    mask: Tensor | None,
    *,
    need_attn: bool = True,
    legacy_mask: bool = False,
    backend: str | None = None,
) -> tuple[Tensor, Tensor | None]:
    """Word-region attention: ``(context B x C x N, attn B x T x N or None)``.

    Args:
        query: region features B x C x N, regions or channels innermost (a channels-last map
            flattened to B x C x (H W) is used in place); context keeps its layout.
        source: word features projected to C channels, B x C x T.
        mask: B x T bool, True where the word is padding; None for no mask.
        need_attn: return the attention map (else None; the fast backends then never write it).
        legacy_mask: reproduce the original code's misaligned mask (see the module docstring).
        backend: a registered backend (``"torch"``, ``"triton"``, ``"cuda"``, ``"reference"``,
            ...), ``"auto"``, or None (``use_backend``, ``ATTNGAN_FAST_BACKEND``, else automatic).
    """
    _checks.check_float("query", query, "B x C x N", 3)
    _checks.check_float("source", source, "B x C x T", 3)
    batch, channels, _ = query.shape
    _checks.check_size("source", source, 0, batch, "B x C x T (B of query)")
    _checks.check_size("source", source, 1, channels, "B x C x T (C of query)")
    _checks.check_nonempty("query", query, "B x C x N")
    _checks.check_nonempty("source", source, "B x C x T")
    if mask is not None:
        if not isinstance(mask, Tensor) or mask.dtype != torch.bool:
            got = mask.dtype if isinstance(mask, Tensor) else type(mask).__name__
            raise TypeError(
                f"mask must be a bool tensor of shape B x T (True = padding), got {got}"
            )
        if tuple(mask.shape) != (batch, source.shape[2]):
            raise ValueError(
                f"mask must have shape B x T = {(batch, source.shape[2])}, got {tuple(mask.shape)}"
            )
    _checks.check_same_device(("query", query), ("source", source), ("mask", mask))
    cast = _checks.autocast_dtype(query.device.type)
    if cast is not None:
        query, source = query.to(cast), source.to(cast)
    _checks.check_same_dtype(("query", query), ("source", source))
    call = registry.Call(
        query.device, query.dtype, {"query": tuple(query.shape), "source": tuple(source.shape)}
    )
    impl = registry.choose(OP, call, backend)
    if impl.composite is not None:
        return impl.composite(query, source, mask, need_attn, legacy_mask)
    context, attn, _ = impl.forward_op(
        _layout.dense_regions(query),
        source.contiguous(),
        None if mask is None else mask.contiguous(),
        need_attn,
        legacy_mask,
    )
    return context, (attn if need_attn else None)
