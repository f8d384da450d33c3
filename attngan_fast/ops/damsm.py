"""``damsm_loss``: the DAMSM word and sentence losses (Xu et al., CVPR 2018, section 3.2; the
original's ``words_loss`` / ``sent_loss`` in taoxugit/AttnGAN ``code/miscc/losses.py``).

For caption i (its first cap_lens[i] words e_i1..e_iL) against image j (regions v_j1..v_jR):

    a[r, k]   = softmax_k(v_jr . e_ik)                 attention of each region over the words
    alpha[k]  = softmax_r(gamma1 * a[:, k])            attention of each word over the regions
    c_k       = sum_r alpha[k, r] v_jr                 region context of word k
    S[j, i]   = log sum_k exp(gamma2 * cos(c_k, e_ik))

The word losses are the two cross-entropies of ``gamma3 * S`` (rows = images, columns =
captions) against the diagonal, pairs i != j of one class masked out; the sentence losses are the
same on ``gamma3 * cos(img_global_j, sent_i)``.

The expensive part, S for all B x B pairs, is the op ``damsm_word_similarity`` defined here, with
two backends registered here: ``reference`` (``damsm_word_similarity_reference``, differentiated
by autograd) and ``torch`` (kernels vectorised over caption-image pairs in chunks of captions, so
memory is bounded by the chunk, about ``chunk x B x R x T`` values, and never reaches
B x B x R x T, with a closed-form backward). The cheap B x B tail (masking, cross-entropies,
sentence term) is plain PyTorch shared by every backend. The kernels' contract (all tensors
contiguous):

* ``forward(img_local B x D x R, words B x D x T, cap_lens B (int64), gamma1, gamma2) -> S B x B``
  (float32; float64 for float64 inputs), S[j, i] image j caption i.
* ``backward(grad_s B x B, img_local, words, cap_lens, gamma1, gamma2)
  -> (grad_img_local, grad_words)``; grad_words is zero beyond each caption's length.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from attngan_fast.ops import _checks, registry

OP = "damsm_word_similarity"
COS_EPS = 1e-8
# Elements in one chunk's caption x image x region x word tensors (torch backend's memory bound).
CHUNK_ELEMENTS = 1 << 22


class DamsmLoss(NamedTuple):
    """The DAMSM losses; ``similarity`` and ``attn_maps`` are None unless asked for.

    similarity: B x B, S[j, i] the word-level score of image j with caption i (before gamma3
    and class masking). attn_maps: B x T x H x W, each caption's word attention over its own
    image's regions (zeros beyond its length), detached, for figures.
    """

    w_loss0: Tensor
    w_loss1: Tensor
    s_loss0: Tensor
    s_loss1: Tensor
    similarity: Tensor | None = None
    attn_maps: Tensor | None = None


def _captions_per_chunk(batch: int, regions: int, words: int) -> int:
    return max(1, min(batch, CHUNK_ELEMENTS // max(1, batch * regions * words)))


class _ChunkForward(NamedTuple):
    s: Tensor  # c x B x R x T scores
    a: Tensor  # c x B x R x T softmax over words
    alpha: Tensor  # c x B x T x R softmax over regions
    ctx: Tensor  # c x B x D x T region contexts
    valid: Tensor  # c x T bool


def _chunk_forward(v: Tensor, e: Tensor, lens: Tensor, gamma1: float) -> _ChunkForward:
    """Attention of a chunk of c captions (e: c x D x T) with every image (v: B x D x R)."""
    valid = torch.arange(e.shape[2], device=e.device)[None, :] < lens[:, None]
    s = torch.einsum("jdr,idk->ijrk", v, e)
    s = s.masked_fill(~valid[:, None, None, :], float("-inf"))
    a = torch.softmax(s, dim=-1)
    alpha = torch.softmax(gamma1 * a.transpose(2, 3), dim=-1)
    ctx = torch.einsum("ijkr,jdr->ijdk", alpha, v)
    return _ChunkForward(s, a, alpha, ctx, valid)


def _cosine_terms(ctx: Tensor, e: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """cos(c_k, e_k) for c x B x D x T contexts and c x D x T words: (cos, dot, |c|, |e|)."""
    dot = (ctx * e[:, None]).sum(dim=2)
    norm_c = ctx.norm(dim=2)
    norm_e = e.norm(dim=1)[:, None, :]
    return dot / (norm_c * norm_e).clamp(min=COS_EPS), dot, norm_c, norm_e


def _log_sum_exp_words(cos: Tensor, valid: Tensor, gamma2: float) -> Tensor:
    return torch.logsumexp((gamma2 * cos).masked_fill(~valid[:, None, :], float("-inf")), dim=-1)


def damsm_word_similarity_reference(
    img_local: Tensor, words: Tensor, cap_lens: Tensor, gamma1: float, gamma2: float
) -> Tensor:
    """Pure-PyTorch S (B x B, rows images, columns captions); differentiable by autograd.

    img_local B x D x R (or B x D x H x W), words B x D x T, cap_lens B. Vectorised over all pairs
    in chunks of captions: the compile baseline and the oracle for the fast backends.
    """
    v = img_local.flatten(2)
    step = _captions_per_chunk(v.shape[0], v.shape[2], words.shape[2])
    rows = []
    for start in range(0, words.shape[0], step):
        e, lens = words[start : start + step], cap_lens[start : start + step]
        f = _chunk_forward(v, e, lens, gamma1)
        rows.append(_log_sum_exp_words(_cosine_terms(f.ctx, e)[0], f.valid, gamma2))
    return torch.cat(rows, dim=0).transpose(0, 1)


# --- torch backend: the kernels' contract in PyTorch ----------------------------------------


def damsm_word_similarity_forward(
    img_local: Tensor, words: Tensor, cap_lens: Tensor, gamma1: float, gamma2: float
) -> Tensor:
    acc = _checks.acc_dtype(img_local.dtype)
    with torch.no_grad():
        s = damsm_word_similarity_reference(
            img_local.to(acc), words.to(acc), cap_lens, gamma1, gamma2
        )
    return s.contiguous()


def damsm_word_similarity_backward(
    grad_s: Tensor,
    img_local: Tensor,
    words: Tensor,
    cap_lens: Tensor,
    gamma1: float,
    gamma2: float,
) -> tuple[Tensor, Tensor]:
    """Closed-form gradients, recomputing each chunk's attention (no autograd graph)."""
    acc = _checks.acc_dtype(img_local.dtype)
    v, e_all, g_all = img_local.to(acc), words.to(acc), grad_s.to(acc).transpose(0, 1)
    grad_v = torch.zeros_like(v)
    grad_e = torch.zeros_like(e_all)
    step = _captions_per_chunk(v.shape[0], v.shape[2], e_all.shape[2])
    for start in range(0, e_all.shape[0], step):
        stop = start + step
        e, lens, g = e_all[start:stop], cap_lens[start:stop], g_all[start:stop]  # g: c x B
        f = _chunk_forward(v, e, lens, gamma1)
        cos, dot, norm_c, norm_e = _cosine_terms(f.ctx, e)
        # S = logsumexp_k(gamma2 * cos_k) -> d cos_k = g * gamma2 * softmax_k(gamma2 * cos)
        w = torch.softmax((gamma2 * cos).masked_fill(~f.valid[:, None, :], float("-inf")), dim=-1)
        d_cos = g[..., None] * gamma2 * w  # c x B x T
        den = norm_c * norm_e
        clamped = den <= COS_EPS
        den = den.clamp(min=COS_EPS)
        scale_c = torch.where(clamped, torch.zeros_like(cos), cos / norm_c.clamp(min=COS_EPS) ** 2)
        scale_e = torch.where(clamped, torch.zeros_like(cos), cos / norm_e.clamp(min=COS_EPS) ** 2)
        d_ctx = d_cos[:, :, None, :] * (
            e[:, None] / den[:, :, None, :] - scale_c[:, :, None] * f.ctx
        )
        grad_e[start:stop] += (
            d_cos[:, :, None, :] * (f.ctx / den[:, :, None, :] - scale_e[:, :, None] * e[:, None])
        ).sum(dim=1)
        # ctx = alpha @ v^T
        d_alpha = torch.einsum("ijdk,jdr->ijkr", d_ctx, v)
        grad_v += torch.einsum("ijdk,ijkr->jdr", d_ctx, f.alpha)
        # alpha = softmax_r(gamma1 * a^T)
        dz = f.alpha * (d_alpha - (f.alpha * d_alpha).sum(dim=-1, keepdim=True))
        da = gamma1 * dz.transpose(2, 3)  # c x B x R x T
        # a = softmax_k(s) over valid words
        ds = f.a * (da - (f.a * da).sum(dim=-1, keepdim=True))
        grad_v += torch.einsum("idk,ijrk->jdr", e, ds)
        grad_e[start:stop] += torch.einsum("jdr,ijrk->idk", v, ds)
    return grad_v.to(img_local.dtype), grad_e.to(words.dtype)


# --- the op and its registrations -----------------------------------------------------------


def _fake_forward(
    img_local: Tensor, words: Tensor, cap_lens: Tensor, gamma1: float, gamma2: float
) -> Tensor:
    batch = img_local.shape[0]
    return img_local.new_empty(batch, batch, dtype=_checks.acc_dtype(img_local.dtype))


def _fake_backward(
    grad_s: Tensor,
    img_local: Tensor,
    words: Tensor,
    cap_lens: Tensor,
    gamma1: float,
    gamma2: float,
) -> tuple[Tensor, Tensor]:
    return torch.empty_like(img_local), torch.empty_like(words)


def _setup_context(ctx, inputs, output):
    img_local, words, cap_lens, gamma1, gamma2 = inputs
    ctx.save_for_backward(img_local, words, cap_lens)
    ctx.gamma1, ctx.gamma2 = gamma1, gamma2


def _backward(impl, ctx, grad_s):
    img_local, words, cap_lens = ctx.saved_tensors
    grad_v, grad_e = impl.backward_op(
        grad_s.contiguous(), img_local, words, cap_lens, ctx.gamma1, ctx.gamma2
    )
    return grad_v, grad_e, None, None, None


def _reference_similarity(
    img_local: Tensor, words: Tensor, cap_lens: Tensor, gamma1: float, gamma2: float
) -> Tensor:
    """The reference backend: S by autograd of the reference, in the kernels' output dtype."""
    sim = damsm_word_similarity_reference(img_local, words, cap_lens, gamma1, gamma2)
    return sim.to(_checks.acc_dtype(img_local.dtype))


registry.define_op(
    OP, _fake_forward, _fake_backward, _setup_context, _backward, reference=_reference_similarity
)
registry.TORCH.register(OP, damsm_word_similarity_forward, damsm_word_similarity_backward)


# --- the loss ---------------------------------------------------------------------------------


def same_class_mask(class_ids: Tensor) -> Tensor:
    """B x B bool: True for pairs i != j of one class (the original's ``masks``)."""
    same = class_ids[:, None] == class_ids[None, :]
    return same & ~torch.eye(class_ids.shape[0], dtype=torch.bool, device=class_ids.device)


def _two_way_cross_entropy(logits: Tensor, class_ids: Tensor | None) -> tuple[Tensor, Tensor]:
    if class_ids is not None:
        logits = logits.masked_fill(same_class_mask(class_ids), float("-inf"))
    labels = torch.arange(logits.shape[0], device=logits.device)
    return F.cross_entropy(logits, labels), F.cross_entropy(logits.transpose(0, 1), labels)


def sentence_logits(img_global: Tensor, sent: Tensor, gamma3: float) -> Tensor:
    """gamma3 * cos(img_global_j, sent_i) as a B x B matrix (rows images), norms clamped at 1e-8."""
    acc = _checks.acc_dtype(img_global.dtype)
    v, e = img_global.to(acc), sent.to(acc)
    norms = v.norm(dim=1)[:, None] * e.norm(dim=1)[None, :]
    return gamma3 * (v @ e.transpose(0, 1)) / norms.clamp(min=COS_EPS)


def damsm_attention_maps(
    img_local: Tensor, words: Tensor, cap_lens: Tensor, gamma1: float
) -> Tensor:
    """Each caption's word attention over its own image: B x T x H x W, zero beyond its length.

    img_local B x D x H x W, words B x D x T. Computed without gradients (for figures).
    """
    batch, _, height, width = img_local.shape
    acc = _checks.acc_dtype(img_local.dtype)
    with torch.no_grad():
        v, e = img_local.flatten(2).to(acc), words.to(acc)
        valid = torch.arange(e.shape[2], device=e.device)[None, :] < cap_lens[:, None]
        s = torch.bmm(v.transpose(1, 2), e).masked_fill(~valid[:, None, :], float("-inf"))
        alpha = torch.softmax(gamma1 * torch.softmax(s, dim=-1).transpose(1, 2), dim=-1)
        alpha = alpha.masked_fill(~valid[:, :, None], 0.0)
    return alpha.reshape(batch, e.shape[2], height, width)


def _check_ids(name: str, t: Tensor | None, batch: int) -> None:
    if t is None:
        return
    if not isinstance(t, Tensor) or t.dtype not in (torch.int64, torch.int32):
        got = t.dtype if isinstance(t, Tensor) else type(t).__name__
        raise TypeError(f"{name} must be an int64 or int32 tensor of shape B, got {got}")
    if tuple(t.shape) != (batch,):
        raise ValueError(f"{name} must have shape B = ({batch},), got {tuple(t.shape)}")


def _check_word_inputs(
    img_local: Tensor, words: Tensor, cap_lens: Tensor, class_ids: Tensor | None
) -> None:
    _checks.check_float("img_local", img_local, "B x D x H x W", 4)
    batch, dim = img_local.shape[:2]
    _checks.check_nonempty("img_local", img_local, "B x D x H x W")
    _checks.check_float("words", words, "B x D x T", 3)
    _checks.check_size("words", words, 0, batch, f"B x D x T (B = {batch} of img_local)")
    _checks.check_size("words", words, 1, dim, f"B x D x T (D = {dim} of img_local)")
    _checks.check_nonempty("words", words, "B x D x T")
    _check_ids("cap_lens", cap_lens, batch)
    _check_ids("class_ids", class_ids, batch)
    _checks.check_same_device(
        ("img_local", img_local), ("words", words), ("cap_lens", cap_lens), ("class_ids", class_ids)
    )
    capturing = cap_lens.is_cuda and torch.cuda.is_current_stream_capturing()
    if not torch.compiler.is_compiling() and not capturing:
        _check_lengths(cap_lens, words.shape[2])


def _check_lengths(cap_lens: Tensor, n_words: int) -> None:
    """1 <= cap_lens <= T without a host synchronisation: ``torch._assert_async`` checks on the
    device (a failure on a GPU is a device-side assertion, as for an out-of-range index in
    PyTorch); on the CPU it fails at once, and the error names the values found."""
    message = f"cap_lens must lie in [1, T = {n_words}] (the words' length)"
    try:
        torch._assert_async(((cap_lens >= 1) & (cap_lens <= n_words)).all(), message)
    except RuntimeError as exc:  # CPU tensors: checked now
        low, high = int(cap_lens.min()), int(cap_lens.max())
        raise ValueError(f"{message}, got values in [{low}, {high}]") from exc


def _check_sentence_inputs(img_global: Tensor, sent: Tensor, class_ids: Tensor | None) -> None:
    _checks.check_float("img_global", img_global, "B x D", 2)
    _checks.check_float("sent", sent, "B x D", 2)
    if sent.shape != img_global.shape:
        raise ValueError(
            f"sent must have shape B x D = {tuple(img_global.shape)} (that of img_global), "
            f"got {tuple(sent.shape)}"
        )
    _check_ids("class_ids", class_ids, img_global.shape[0])
    _checks.check_same_device(("img_global", img_global), ("sent", sent), ("class_ids", class_ids))


class DamsmWordsLoss(NamedTuple):
    """The DAMSM word losses; ``similarity`` and ``attn_maps`` as in ``DamsmLoss``."""

    w_loss0: Tensor
    w_loss1: Tensor
    similarity: Tensor | None = None
    attn_maps: Tensor | None = None


def damsm_words_loss(
    img_local: Tensor,
    words: Tensor,
    cap_lens: Tensor,
    class_ids: Tensor | None,
    gamma1: float,
    gamma2: float,
    gamma3: float,
    *,
    need_similarity: bool = False,
    need_attn: bool = False,
    backend: str | None = None,
) -> DamsmWordsLoss:
    """The DAMSM word losses alone (the original's ``words_loss``); arguments as ``damsm_loss``."""
    _check_word_inputs(img_local, words, cap_lens, class_ids)
    common = torch.promote_types(img_local.dtype, words.dtype)
    img_local, words = img_local.to(common), words.to(common)
    v = img_local.flatten(2)
    call = registry.Call(
        v.device, v.dtype, {"img_local": tuple(v.shape), "words": tuple(words.shape)}
    )
    impl = registry.choose(OP, call, backend)
    run = impl.composite if impl.composite is not None else impl.forward_op
    sim = run(
        v.contiguous(),
        words.contiguous(),
        cap_lens.to(torch.int64).contiguous(),
        float(gamma1),
        float(gamma2),
    )
    w_loss0, w_loss1 = _two_way_cross_entropy(gamma3 * sim, class_ids)
    attn = damsm_attention_maps(img_local, words, cap_lens, gamma1) if need_attn else None
    return DamsmWordsLoss(w_loss0, w_loss1, sim if need_similarity else None, attn)


def damsm_sentence_loss(
    img_global: Tensor, sent: Tensor, class_ids: Tensor | None, gamma3: float
) -> tuple[Tensor, Tensor]:
    """The DAMSM sentence losses (s_loss0, s_loss1) of image and sentence codes, B x D each."""
    _check_sentence_inputs(img_global, sent, class_ids)
    return _two_way_cross_entropy(sentence_logits(img_global, sent, gamma3), class_ids)


def damsm_loss(
    img_local: Tensor,
    img_global: Tensor,
    words: Tensor,
    sent: Tensor,
    cap_lens: Tensor,
    class_ids: Tensor | None,
    gamma1: float,
    gamma2: float,
    gamma3: float,
    *,
    need_similarity: bool = False,
    need_attn: bool = False,
    backend: str | None = None,
) -> DamsmLoss:
    """The DAMSM word losses (w_loss0, w_loss1) and sentence losses (s_loss0, s_loss1).

    Args:
        img_local: region features B x D x H x W (R = H*W regions; 256 x 17 x 17 in AttnGAN).
        img_global: global image code B x D.
        words: word embeddings B x D x T (positions beyond cap_lens ignored).
        sent: sentence embeddings B x D.
        cap_lens: B int64, each caption's length in [1, T].
        class_ids: B int64 or None; pairs of one class other than the true pair are masked out.
        gamma1, gamma2, gamma3: the smoothing factors (4, 5, 10 in AttnGAN).
        need_similarity: also return S (B x B) in ``similarity``.
        need_attn: also return each caption's attention on its own image in ``attn_maps``.
        backend: a registered backend of ``damsm_word_similarity`` (``"torch"``, ``"triton"``,
            ``"cuda"``, ``"reference"``, ...), ``"auto"``, or None (``use_backend``,
            ``ATTNGAN_FAST_BACKEND``, else automatic).

    Mixed input dtypes are promoted to a common one. The losses are float32 (float64 for float64
    inputs). Memory grows as B x B x T (plus the backend's chunk), never B x B x R x T.
    """
    _check_sentence_inputs(img_global, sent, class_ids)
    if img_global.shape[0] != img_local.shape[0] or img_global.shape[1] != img_local.shape[1]:
        raise ValueError(
            f"img_global must have shape B x D = {tuple(img_local.shape[:2])} (B, D of img_local), "
            f"got {tuple(img_global.shape)}"
        )
    words_part = damsm_words_loss(
        img_local, words, cap_lens, class_ids, gamma1, gamma2, gamma3,
        need_similarity=need_similarity, need_attn=need_attn, backend=backend,
    )  # fmt: skip
    s_loss0, s_loss1 = damsm_sentence_loss(img_global, sent, class_ids, gamma3)
    return DamsmLoss(
        words_part.w_loss0, words_part.w_loss1, s_loss0, s_loss1,
        words_part.similarity, words_part.attn_maps,
    )  # fmt: skip
