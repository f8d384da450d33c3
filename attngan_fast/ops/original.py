"""Faithful transcriptions of the original AttnGAN code paths that the fused ops replace.

Test oracles and benchmark baselines only: ``words_loss`` with its Python loop over captions
(O(B) launches of O(B*R*T*D) work, O(B*R*T) memory each), ``sent_loss``, ``func_attention`` and
the attention of ``GlobalAttentionGeneral`` with the original's ``mask.repeat`` indexing. Written
for modern PyTorch (no Variable, in-place ops kept where they were), same arithmetic order.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


def cosine_similarity(x1: Tensor, x2: Tensor, dim: int = 1, eps: float = 1e-8) -> Tensor:
    """The original's cosine: dot / (|x1| |x2|).clamp(eps)."""
    w12 = torch.sum(x1 * x2, dim)
    w1 = torch.norm(x1, 2, dim)
    w2 = torch.norm(x2, 2, dim)
    return (w12 / (w1 * w2).clamp(min=eps)).squeeze()


def class_masks(class_ids: Tensor | None, batch_size: int) -> Tensor | None:
    """masks[i, j] = same class and i != j, built row by row as the original did with numpy."""
    if class_ids is None:
        return None
    ids = class_ids.cpu().numpy()
    rows = []
    for i in range(batch_size):
        mask = (ids == ids[i]).astype("uint8")
        mask[i] = 0
        rows.append(mask.reshape((1, -1)))
    return torch.from_numpy(np.concatenate(rows, 0)).bool().to(class_ids.device)


def func_attention(query: Tensor, context: Tensor, gamma1: float) -> tuple[Tensor, Tensor]:
    """query B x D x L words, context B x D x ih x iw ->
    (weightedContext B x D x L, attn B x L x ih x iw)."""
    batch_size, query_len = query.size(0), query.size(2)
    ih, iw = context.size(2), context.size(3)
    source_len = ih * iw
    context = context.view(batch_size, -1, source_len)
    context_t = torch.transpose(context, 1, 2).contiguous()
    attn = torch.bmm(context_t, query)
    attn = attn.view(batch_size * source_len, query_len)
    attn = torch.softmax(attn, dim=1)
    attn = attn.view(batch_size, source_len, query_len)
    attn = torch.transpose(attn, 1, 2).contiguous()
    attn = attn.view(batch_size * query_len, source_len)
    attn = attn * gamma1
    attn = torch.softmax(attn, dim=1)
    attn = attn.view(batch_size, query_len, source_len)
    attn_t = torch.transpose(attn, 1, 2).contiguous()
    weighted_context = torch.bmm(context, attn_t)
    return weighted_context, attn.view(batch_size, -1, ih, iw)


def words_loss(
    img_features: Tensor,
    words_emb: Tensor,
    labels: Tensor,
    cap_lens: Tensor,
    class_ids: Tensor | None,
    batch_size: int,
    gamma1: float,
    gamma2: float,
    gamma3: float,
) -> tuple[Tensor, Tensor, list[Tensor], Tensor]:
    """The original per-caption loop -> (loss0, loss1, att_maps, similarities before gamma3)."""
    masks = class_masks(class_ids, batch_size)
    att_maps = []
    similarities = []
    for i in range(batch_size):
        words_num = int(cap_lens[i])
        word = words_emb[i, :, :words_num].unsqueeze(0).contiguous()
        word = word.repeat(batch_size, 1, 1)
        context = img_features
        weighted_context, attn = func_attention(word, context, gamma1)
        att_maps.append(attn[i].unsqueeze(0).contiguous())
        word = word.transpose(1, 2).contiguous()
        weighted_context = weighted_context.transpose(1, 2).contiguous()
        word = word.view(batch_size * words_num, -1)
        weighted_context = weighted_context.view(batch_size * words_num, -1)
        row_sim = cosine_similarity(word, weighted_context)
        row_sim = row_sim.view(batch_size, words_num)
        row_sim = row_sim.mul(gamma2).exp()
        row_sim = row_sim.sum(dim=1, keepdim=True)
        row_sim = torch.log(row_sim)
        similarities.append(row_sim)
    similarities = torch.cat(similarities, 1)
    raw = similarities
    if masks is not None:
        similarities = similarities.masked_fill(masks, -float("inf"))
    similarities = similarities * gamma3
    similarities1 = similarities.transpose(0, 1)
    loss0 = torch.nn.functional.cross_entropy(similarities, labels)
    loss1 = torch.nn.functional.cross_entropy(similarities1, labels)
    return loss0, loss1, att_maps, raw


def sent_loss(
    cnn_code: Tensor,
    rnn_code: Tensor,
    labels: Tensor,
    class_ids: Tensor | None,
    batch_size: int,
    gamma3: float,
    eps: float = 1e-8,
) -> tuple[Tensor, Tensor]:
    """The original sentence loss (cosine of global codes, gamma3, class masking, two CEs)."""
    masks = class_masks(class_ids, batch_size)
    if cnn_code.dim() == 2:
        cnn_code = cnn_code.unsqueeze(0)
        rnn_code = rnn_code.unsqueeze(0)
    cnn_code_norm = torch.norm(cnn_code, 2, dim=2, keepdim=True)
    rnn_code_norm = torch.norm(rnn_code, 2, dim=2, keepdim=True)
    scores0 = torch.bmm(cnn_code, rnn_code.transpose(1, 2))
    norm0 = torch.bmm(cnn_code_norm, rnn_code_norm.transpose(1, 2))
    scores0 = scores0 / norm0.clamp(min=eps) * gamma3
    scores0 = scores0.squeeze()
    if masks is not None:
        scores0 = scores0.masked_fill(masks, -float("inf"))
    scores1 = scores0.transpose(0, 1)
    loss0 = torch.nn.functional.cross_entropy(scores0, labels)
    loss1 = torch.nn.functional.cross_entropy(scores1, labels)
    return loss0, loss1


def global_attention_general(
    target: Tensor, source_t: Tensor, mask: Tensor | None
) -> tuple[Tensor, Tensor]:
    """GlobalAttentionGeneral.forward after ``conv_context``, with the original's mask indexing.

    target B x C x N (region features), source_t B x C x T (projected words), mask B x T bool.
    Returns (weightedContext B x C x N, attn B x T x N).
    """
    batch_size, query_len = target.size(0), target.size(2)
    source_len = source_t.size(2)
    target_t = torch.transpose(target, 1, 2).contiguous()
    attn = torch.bmm(target_t, source_t)
    attn = attn.view(batch_size * query_len, source_len)
    if mask is not None:
        mask = mask.repeat(query_len, 1)
        attn = attn.masked_fill(mask, -float("inf"))
    attn = torch.softmax(attn, dim=1)
    attn = attn.view(batch_size, query_len, source_len)
    attn = torch.transpose(attn, 1, 2).contiguous()
    weighted_context = torch.bmm(source_t, attn)
    return weighted_context, attn
