"""The loss terms of the model family on hand-made batches: the matching-aware D sees mismatched
captions, colour consistency compares pixel moments, GAN-INT interpolates sentences."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from attngan_fast.losses import (
    Objective,
    colour_consistency_loss,
    colour_moments,
    discriminator_loss,
    generator_objective,
    interpolate_sentences,
    interpolation_loss,
)

B = 4


class MatchingD(nn.Module):
    """A hand-made matching-aware D without an unconditional head (GAN-INT-CLS's): images and
    captions carry an id (images: the value of their pixels, -1 for fakes; captions: one-hot);
    the conditional head says "real" (logit +margin) exactly when the ids agree, and records the
    (image id, caption id) pairs it is shown."""

    UNCOND_DNET = None

    def __init__(self, margin: float = 6.0, blind: bool = False):
        super().__init__()
        self.margin, self.blind, self.pairs = margin, blind, []

    def forward(self, images):
        return images.flatten(1)[:, 0]  # the id

    def COND_DNET(self, ids, sent):
        caption_ids = sent.argmax(dim=1).to(ids.dtype)
        self.pairs += list(zip(ids.long().tolist(), caption_ids.long().tolist()))
        match = (ids == caption_ids) | (self.blind & (ids >= 0))
        return torch.where(match, self.margin, -self.margin)


def _batch():
    real = torch.arange(B, dtype=torch.float32).view(B, 1, 1, 1).expand(B, 3, 4, 4)
    fake = torch.full((B, 3, 4, 4), -1.0)
    sent = torch.eye(B)  # caption i describes image i
    return real, fake, sent


def test_matching_aware_d_sees_each_real_image_with_a_mismatched_caption():
    real, fake, sent = _batch()
    d = MatchingD()
    loss = discriminator_loss(d, real, fake, sent)
    wrong = [(i, i + 1) for i in range(B - 1)]
    assert set(wrong) <= set(d.pairs)  # real image i with caption i + 1
    assert {(i, i) for i in range(B)} <= set(d.pairs)  # real with its own caption
    assert {(-1, i) for i in range(B)} <= set(d.pairs)  # fakes with the captions
    small = F.softplus(torch.tensor(-6.0))  # BCE of a confident right answer
    torch.testing.assert_close(loss, small + (small + small) / 2)


def test_a_text_blind_d_pays_for_the_mismatched_pairs():
    """A D that calls every real image real, whatever the caption, is as good on real / right
    and fake pairs, and loses exactly half the BCE of the wrong pairs: only the mismatched
    captions tell it to read the text."""
    real, fake, sent = _batch()
    matching = discriminator_loss(MatchingD(), real, fake, sent)
    blind = discriminator_loss(MatchingD(blind=True), real, fake, sent)
    small, large = F.softplus(torch.tensor(-6.0)), F.softplus(torch.tensor(6.0))
    torch.testing.assert_close(blind - matching, (large - small) / 2)


def test_colour_moments_and_consistency():
    img = torch.rand(2, 3, 8, 8) * 2 - 1
    mean, cov = colour_moments(img)
    pixels = img.flatten(2)
    torch.testing.assert_close(mean, pixels.mean(2))
    want = torch.stack([torch.cov(p, correction=0) for p in pixels])
    torch.testing.assert_close(cov, want, rtol=1e-5, atol=1e-6)
    # the same colour statistics at twice the size (each pixel repeated): no loss
    bigger = F.interpolate(img, scale_factor=2, mode="nearest")
    assert colour_consistency_loss([img, bigger]).item() == pytest.approx(0.0, abs=1e-10)
    shifted = (bigger + 0.5).requires_grad_()
    loss = colour_consistency_loss([img, shifted])
    torch.testing.assert_close(loss, torch.tensor(0.25))  # mean moved by 0.5, covariance not
    loss.backward()
    assert shifted.grad.abs().sum() > 0
    coarse = img.clone().requires_grad_()
    assert not colour_consistency_loss([coarse, bigger + 0.5]).requires_grad  # the target


def test_interpolated_sentences_and_their_term():
    sent = torch.randn(B, 6)
    mixed = interpolate_sentences(sent)
    torch.testing.assert_close(mixed[0], 0.5 * sent[0] + 0.5 * sent[1])
    torch.testing.assert_close(mixed[-1], 0.5 * sent[-1] + 0.5 * sent[0])
    d = MatchingD()
    fakes = torch.arange(B, dtype=torch.float32).view(B, 1, 1, 1).expand(B, 3, 4, 4)
    loss = interpolation_loss([d], [fakes], torch.eye(B))
    torch.testing.assert_close(loss, F.softplus(torch.tensor(-6.0)))  # judged on that text


def test_generator_objective_adds_the_weighted_terms():
    real, fake, sent = _batch()
    fakes = [torch.rand(B, 3, 4, 4), torch.rand(B, 3, 8, 8)]
    mu, logvar = torch.randn(B, 5), torch.randn(B, 5)
    args = ([MatchingD(), MatchingD()], None, fakes, torch.randn(B, 6, 3), sent,
            torch.full((B,), 3), None, mu, logvar)  # fmt: skip
    base, logs = generator_objective(Objective(lambda_damsm=0, kl=0), *args)
    assert set(logs) == {"g_loss0", "g_loss1"}
    objective = Objective(lambda_damsm=0, kl=2.0, colour=3.0, interpolation=0.5)
    total, logs = generator_objective(objective, *args, interpolated=(fakes, sent))
    assert {"kl_loss", "colour_loss", "int_loss"} <= set(logs)
    torch.testing.assert_close(logs["colour_loss"], 3.0 * colour_consistency_loss(fakes))
    torch.testing.assert_close(
        total, base + logs["kl_loss"] + logs["colour_loss"] + logs["int_loss"]
    )
    with pytest.raises(ValueError, match="image encoder"):
        generator_objective(Objective(lambda_damsm=1.0, kl=0), *args)
