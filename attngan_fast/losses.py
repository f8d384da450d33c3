"""The AttnGAN losses (``code/miscc/losses.py`` of taoxugit/AttnGAN), computed from logits so they
run under autocast.

The discriminators return logits; ``F.binary_cross_entropy_with_logits(logits, y)`` equals the
original ``nn.BCELoss()(sigmoid(logits), y)`` (up to the original's clamping of log at -100).
The DAMSM terms go through ``damsm_terms``: ``ops.damsm_loss`` (the fused word-region
similarity), or with ``original_loop`` the original per-caption loop (``ops.original``), the
faithful baseline of training and DAMSM pretraining alike.

Shapes: images B x 3 x S x S, sent_emb B x nef, words_embs B x nef x T, cap_lens B (int64),
class_ids B (int64) or None (no same-class masking), mu / logvar B x c_dim.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attngan_fast import ops
from attngan_fast.ops import original


def _bce(logits: Tensor, target: float) -> Tensor:
    """Mean BCE of ``logits`` against a constant label (1 real, 0 fake)."""
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))


def _class_ids(class_ids: Tensor | np.ndarray | None, device: torch.device) -> Tensor | None:
    """class_ids as an int64 tensor on ``device`` (the original datasets give numpy arrays)."""
    if class_ids is None:
        return None
    return torch.as_tensor(class_ids, device=device).to(torch.int64)


def discriminator_loss(
    netD: nn.Module, real_imgs: Tensor, fake_imgs: Tensor, conditions: Tensor
) -> Tensor:
    """One stage's D loss; ``fake_imgs`` are detached here.

    Conditional terms on real (label 1), fake (0) and wrong pairs (real image i with caption
    i + 1, label 0); unconditional terms on real (1) and fake (0) when ``netD.UNCOND_DNET`` exists:
    errD = (real + cond_real) / 2 + (fake + cond_fake + cond_wrong) / 3, else
    cond_real + (cond_fake + cond_wrong) / 2.
    """
    real_features = netD(real_imgs)
    fake_features = netD(fake_imgs.detach())
    batch_size = real_features.size(0)
    cond_real_errD = _bce(netD.COND_DNET(real_features, conditions), 1.0)
    cond_fake_errD = _bce(netD.COND_DNET(fake_features, conditions), 0.0)
    cond_wrong_logits = netD.COND_DNET(real_features[: batch_size - 1], conditions[1:batch_size])
    cond_wrong_errD = _bce(cond_wrong_logits, 0.0)
    if netD.UNCOND_DNET is None:
        return cond_real_errD + (cond_fake_errD + cond_wrong_errD) / 2.0
    real_errD = _bce(netD.UNCOND_DNET(real_features), 1.0)
    fake_errD = _bce(netD.UNCOND_DNET(fake_features), 0.0)
    return (real_errD + cond_real_errD) / 2.0 + (fake_errD + cond_fake_errD + cond_wrong_errD) / 3.0


def generator_loss(
    netsD: list[nn.Module] | nn.ModuleList,
    image_encoder: nn.Module,
    fake_imgs: list[Tensor],
    words_embs: Tensor,
    sent_emb: Tensor,
    cap_lens: Tensor,
    class_ids: Tensor | np.ndarray | None,
    *,
    lambda_: float,
    gamma1: float,
    gamma2: float,
    gamma3: float,
    original_loop: bool = False,
) -> tuple[Tensor, dict[str, Tensor]]:
    """G's adversarial loss over the stages plus LAMBDA x DAMSM on the last stage's images.

    Per stage i: BCE(UNCOND_DNET(D_i(fake_i)), 1) + BCE(COND_DNET(D_i(fake_i), sent), 1).
    Last stage: the image encoder's features of the fakes against the (detached) caption
    embeddings: lambda_ * (w_loss0 + w_loss1) + lambda_ * (s_loss0 + s_loss1).
    Returns (errG_total, logs) with logs the detached terms ``g_loss{i}``, ``w_loss``, ``s_loss``.
    The KL term is separate (``KL_loss``). ``original_loop``: see ``damsm_terms``.
    """
    words_embs, sent_emb = words_embs.detach(), sent_emb.detach()
    logs: dict[str, Tensor] = {}
    errG_total = fake_imgs[0].new_zeros((), dtype=torch.float32)
    for i, netD in enumerate(netsD):
        features = netD(fake_imgs[i])
        g_loss = _bce(netD.COND_DNET(features, sent_emb), 1.0)
        if netD.UNCOND_DNET is not None:
            g_loss = g_loss + _bce(netD.UNCOND_DNET(features), 1.0)
        errG_total = errG_total + g_loss
        logs[f"g_loss{i}"] = g_loss.detach()
    region_features, cnn_code = image_encoder(fake_imgs[len(netsD) - 1])
    w0, w1, s0, s1 = damsm_terms(
        region_features, cnn_code, words_embs, sent_emb, cap_lens, class_ids,
        gamma1, gamma2, gamma3, original_loop=original_loop,
    )  # fmt: skip
    w_loss = (w0 + w1) * lambda_
    s_loss = (s0 + s1) * lambda_
    logs["w_loss"], logs["s_loss"] = w_loss.detach(), s_loss.detach()
    return errG_total + w_loss + s_loss, logs


def damsm_terms(
    img_local: Tensor,
    img_global: Tensor,
    words_emb: Tensor,
    sent_emb: Tensor,
    cap_lens: Tensor,
    class_ids: Tensor | np.ndarray | None,
    gamma1: float,
    gamma2: float,
    gamma3: float,
    *,
    original_loop: bool = False,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The DAMSM losses (w_loss0, w_loss1, s_loss0, s_loss1) of images (local B x D x H x W,
    global B x D) against captions (words B x D x T, sentence B x D, lengths B).

    ``ops.damsm_loss``, or with ``original_loop`` the original code's loop over captions
    (``ops.original.words_loss`` / ``sent_loss``, taoxugit/AttnGAN ``code/miscc/losses.py``).
    """
    class_ids = _class_ids(class_ids, img_global.device)
    if not original_loop:
        return ops.damsm_loss(
            img_local, img_global, words_emb, sent_emb, cap_lens, class_ids,
            gamma1, gamma2, gamma3,
        )[:4]  # fmt: skip
    batch = img_global.shape[0]
    labels = torch.arange(batch, device=img_global.device)
    w0, w1, _, _ = original.words_loss(
        img_local, words_emb, labels, cap_lens, class_ids, batch, gamma1, gamma2, gamma3
    )
    s0, s1 = original.sent_loss(img_global, sent_emb, labels, class_ids, batch, gamma3)
    return w0, w1, s0, s1


def KL_loss(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) per element: -0.5 mean(1 + logvar - mu^2 - exp(logvar))."""
    return -0.5 * torch.mean(1 + logvar - mu.pow(2) - logvar.exp())


def words_loss(
    img_features: Tensor,
    words_emb: Tensor,
    cap_lens: Tensor,
    class_ids: Tensor | np.ndarray | None,
    gamma1: float,
    gamma2: float,
    gamma3: float,
) -> tuple[Tensor, Tensor, Tensor]:
    """DAMSM word losses: img_features B x D x H x W, words_emb B x D x T ->
    (w_loss0, w_loss1, attention maps B x T x H x W of each caption on its own image).

    For the word and sentence losses together use ``ops.damsm_loss`` directly (one call).
    """
    out = ops.damsm_words_loss(
        img_features,
        words_emb,
        cap_lens,
        _class_ids(class_ids, img_features.device),
        gamma1,
        gamma2,
        gamma3,
        need_attn=True,
    )
    return out.w_loss0, out.w_loss1, out.attn_maps


def sent_loss(
    cnn_code: Tensor,
    rnn_code: Tensor,
    class_ids: Tensor | np.ndarray | None,
    gamma3: float,
) -> tuple[Tensor, Tensor]:
    """DAMSM sentence losses: image codes B x D, sentence codes B x D -> (s_loss0, s_loss1).

    scores[j, i] = gamma3 * cos(cnn_code_j, rnn_code_i) (norms clamped at 1e-8); pairs i != j of
    one class masked out; cross-entropies of the rows and of the columns against the diagonal.
    """
    return ops.damsm_sentence_loss(
        cnn_code, rnn_code, _class_ids(class_ids, cnn_code.device), gamma3
    )
