"""The AttnGAN losses (``code/miscc/losses.py`` of taoxugit/AttnGAN), computed from logits so they
run under autocast.

The discriminators return logits; ``F.binary_cross_entropy_with_logits(logits, y)`` equals the
original ``nn.BCELoss()(sigmoid(logits), y)`` (up to the original's clamping of log at -100).
The DAMSM terms go through ``damsm_terms``: ``ops.damsm_loss`` (the fused word-region
similarity), or with ``original_loop`` the original per-caption loop (``ops.original``), the
faithful baseline of training and DAMSM pretraining alike.

Shapes: images B x 3 x S x S, sent_emb B x nef, words_embs B x nef x T, cap_lens B (int64),
class_ids B (int64) or None (no same-class masking), mu / logvar B x c_dim.

The terms of the whole model family (AttnGAN, StackGAN-v2, GAN-INT-CLS) are here; an
``Objective`` says which a model trains with and ``generator_objective`` sums G's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

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


INTERPOLATION_BETA = 0.5
"""GAN-INT's interpolation weight: G sees beta * t1 + (1 - beta) * t2 (Reed et al. 2016)."""


@dataclass(frozen=True)
class Objective:
    """The training objective of one model of the family (``runtime.networks`` builds it from a
    config's ``TRAIN.SMOOTH`` and ``TRAIN.COEFF``).

    Each D (``discriminator_loss``): the matching-aware terms, real image with its caption (1),
    fake (0) and real image with a mismatched caption (0), plus the unconditional real / fake
    terms where D has that head. G (``generator_objective``): per image, the adversarial terms
    of its D's heads; ``lambda_damsm`` x DAMSM on the last image (0: no image encoder is needed,
    loaded or run); ``kl`` x CA_NET's KL; ``colour`` x StackGAN-v2's colour consistency of
    consecutive images; ``interpolation`` x the conditional adversarial term of images drawn
    from interpolated sentence embeddings (GAN-INT).
    """

    lambda_damsm: float = 5.0
    gamma1: float = 4.0
    gamma2: float = 5.0
    gamma3: float = 10.0
    kl: float = 1.0
    colour: float = 0.0
    interpolation: float = 0.0

    @property
    def needs_image_encoder(self) -> bool:
        return self.lambda_damsm > 0


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
    image_encoder: nn.Module | None,
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
    embeddings: lambda_ * (w_loss0 + w_loss1) + lambda_ * (s_loss0 + s_loss1); with lambda_ 0
    the image encoder is not called (it may be None).
    Returns (errG_total, logs) with logs the detached terms ``g_loss{i}``, ``w_loss``, ``s_loss``
    (the last two only when lambda_ > 0). The KL term is separate (``KL_loss``).
    ``original_loop``: see ``damsm_terms``.
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
    if lambda_ == 0:
        return errG_total, logs
    if image_encoder is None:
        raise ValueError(f"the DAMSM term (lambda {lambda_}) needs an image encoder")
    region_features, cnn_code = image_encoder(fake_imgs[len(netsD) - 1])
    w0, w1, s0, s1 = damsm_terms(
        region_features, cnn_code, words_embs, sent_emb, cap_lens, class_ids,
        gamma1, gamma2, gamma3, original_loop=original_loop,
    )  # fmt: skip
    w_loss = (w0 + w1) * lambda_
    s_loss = (s0 + s1) * lambda_
    logs["w_loss"], logs["s_loss"] = w_loss.detach(), s_loss.detach()
    return errG_total + w_loss + s_loss, logs


def colour_moments(images: Tensor) -> tuple[Tensor, Tensor]:
    """Per image, the mean colour B x 3 and the covariance of its pixels' colours B x 3 x 3
    (divided by the number of pixels), in float32."""
    pixels = images.float().flatten(2)  # B x 3 x N
    mean = pixels.mean(dim=2)
    centred = pixels - mean[:, :, None]
    return mean, centred @ centred.transpose(1, 2) / pixels.shape[2]


def colour_consistency_loss(fake_imgs: Sequence[Tensor], cov_weight: float = 5.0) -> Tensor:
    """StackGAN-v2's colour-consistency term (Zhang et al., TPAMI 2018) over consecutive images
    (increasing sizes): sum over i >= 1 of MSE(mean_i, mean_{i-1}) + cov_weight x
    MSE(cov_i, cov_{i-1}), the coarser image's moments detached (the finer follows it)."""
    if len(fake_imgs) < 2:
        raise ValueError("colour consistency needs the images of at least two stages")
    total = fake_imgs[0].new_zeros((), dtype=torch.float32)
    for coarse, fine in zip(fake_imgs[:-1], fake_imgs[1:]):
        mean_c, cov_c = colour_moments(coarse.detach())
        mean_f, cov_f = colour_moments(fine)
        total = total + F.mse_loss(mean_f, mean_c) + cov_weight * F.mse_loss(cov_f, cov_c)
    return total


def interpolate_sentences(sent_emb: Tensor, beta: float = INTERPOLATION_BETA) -> Tensor:
    """GAN-INT's interpolated text: beta x sent_i + (1 - beta) x sent_(i+1 mod B), B x nef."""
    return beta * sent_emb + (1.0 - beta) * sent_emb.roll(-1, dims=0)


def interpolation_loss(
    netsD: Sequence[nn.Module] | nn.ModuleList, fake_imgs: Sequence[Tensor], sent_emb: Tensor
) -> Tensor:
    """GAN-INT's G term: images drawn from interpolated sentences ``sent_emb`` (B x nef) should
    look real to each D's conditional head for that text: sum of BCE(COND_DNET(D_i(fake_i),
    sent), 1). No real image exists for such text, so the Ds do not train on it."""
    total = fake_imgs[0].new_zeros((), dtype=torch.float32)
    for netD, fake in zip(netsD, fake_imgs, strict=True):
        total = total + _bce(netD.COND_DNET(netD(fake), sent_emb.detach()), 1.0)
    return total


def generator_objective(
    objective: Objective,
    netsD: Sequence[nn.Module] | nn.ModuleList,
    image_encoder: nn.Module | None,
    fake_imgs: list[Tensor],
    words_embs: Tensor,
    sent_emb: Tensor,
    cap_lens: Tensor,
    class_ids: Tensor | np.ndarray | None,
    mu: Tensor | None = None,
    logvar: Tensor | None = None,
    *,
    interpolated: tuple[list[Tensor], Tensor] | None = None,
    original_loop: bool = False,
) -> tuple[Tensor, dict[str, Tensor]]:
    """G's whole loss under ``objective``: ``generator_loss`` (adversarial + lambda x DAMSM) +
    kl x KL(mu, logvar) + colour x ``colour_consistency_loss`` + interpolation x
    ``interpolation_loss`` on ``interpolated`` = (images drawn from the interpolated sentences,
    those sentences). Returns (total, detached terms: those of ``generator_loss`` and
    ``kl_loss``, ``colour_loss``, ``int_loss`` where their weight is not 0)."""
    total, logs = generator_loss(
        netsD, image_encoder, fake_imgs, words_embs, sent_emb, cap_lens, class_ids,
        lambda_=objective.lambda_damsm, gamma1=objective.gamma1, gamma2=objective.gamma2,
        gamma3=objective.gamma3, original_loop=original_loop,
    )  # fmt: skip
    if objective.kl:
        if mu is None or logvar is None:
            raise ValueError("the KL term needs CA_NET's mu and logvar (kl weight is not 0)")
        kl = objective.kl * KL_loss(mu.float(), logvar.float())
        total, logs["kl_loss"] = total + kl, kl.detach()
    if objective.colour:
        colour = objective.colour * colour_consistency_loss(fake_imgs)
        total, logs["colour_loss"] = total + colour, colour.detach()
    if objective.interpolation:
        if interpolated is None:
            raise ValueError("the interpolation term needs the interpolated images and text")
        term = objective.interpolation * interpolation_loss(netsD, *interpolated)
        total, logs["int_loss"] = total + term, term.detach()
    return total, logs


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
