"""The GAN losses equal direct transcriptions of the original's BCE formulas (miscc/losses.py)."""

import numpy as np
import pytest
import torch
from torch import nn

from attngan_fast.losses import (
    KL_loss,
    damsm_terms,
    discriminator_loss,
    generator_loss,
    sent_loss,
    words_loss,
)
from attngan_fast.models import D_NET64, D_NET128, D_NET256, SmallImageEncoder, init_weights
from attngan_fast.ops import original

B = 4
G1, G2, G3 = 4.0, 5.0, 10.0


def bce(logits, label):
    """The original nn.BCELoss on the Sigmoid output, written out."""
    p = torch.sigmoid(logits.double())
    return -(label * torch.log(p) + (1 - label) * torch.log(1 - p)).mean()


class LogitsD(nn.Module):
    """A stand-in D whose heads return fixed random logits (features = the images' index)."""

    def __init__(self, uncond=True):
        super().__init__()
        self.logits = {k: torch.randn(B) for k in ("real", "fake", "cond_real", "cond_fake")}
        self.wrong = torch.randn(B - 1)
        self.UNCOND_DNET = self._uncond if uncond else None

    def forward(self, imgs):
        return imgs  # "features": a B x 1 tensor holding 0 (real) or 1 (fake)

    def _uncond(self, features):
        return self.logits["fake" if features[0, 0] else "real"]

    def COND_DNET(self, features, cond):
        if features.shape[0] == B - 1:
            assert torch.equal(cond, self.cond[1:])
            return self.wrong
        return self.logits["cond_fake" if features[0, 0] else "cond_real"]


def test_discriminator_loss_formula():
    for uncond in (True, False):
        d = LogitsD(uncond)
        d.cond = torch.randn(B, 8)
        real, fake = torch.zeros(B, 1), torch.ones(B, 1)
        got = discriminator_loss(d, real, fake, d.cond)
        lg = d.logits
        if uncond:
            want = (bce(lg["real"], 1) + bce(lg["cond_real"], 1)) / 2 + (
                bce(lg["fake"], 0) + bce(lg["cond_fake"], 0) + bce(d.wrong, 0)
            ) / 3
        else:
            want = bce(lg["cond_real"], 1) + (bce(lg["cond_fake"], 0) + bce(d.wrong, 0)) / 2
        torch.testing.assert_close(got.double(), want)


def test_discriminator_loss_real_network_and_autocast():
    d = init_weights(D_NET64(4))
    real, fake, sent = torch.randn(B, 3, 64, 64), torch.randn(B, 3, 64, 64), torch.randn(B, 256)
    fake.requires_grad_()
    d.eval()
    got = discriminator_loss(d, real, fake, sent)
    fr, ff = d(real), d(fake)
    want = (bce(d.UNCOND_DNET(fr), 1) + bce(d.COND_DNET(fr, sent), 1)) / 2 + (
        bce(d.UNCOND_DNET(ff), 0) + bce(d.COND_DNET(ff, sent), 0)
        + bce(d.COND_DNET(fr[:-1], sent[1:]), 0)
    ) / 3  # fmt: skip
    torch.testing.assert_close(got.double(), want)
    got.backward()
    assert fake.grad is None  # fakes are detached
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = discriminator_loss(d, real, fake, sent)
    assert low.dtype == torch.float32 and torch.isfinite(low)


def test_kl_loss_formula():
    mu, logvar = torch.randn(5, 100), torch.randn(5, 100)
    want = -0.5 * (1 + logvar - mu**2 - torch.exp(logvar)).sum() / mu.numel()
    torch.testing.assert_close(KL_loss(mu, logvar), want)


@pytest.mark.parametrize("original_loop", [False, True])
def test_generator_loss_formula(original_loop):
    nets = nn.ModuleList([D_NET64(2, 16), D_NET128(2, 16), D_NET256(2, 16)]).eval()
    enc = SmallImageEncoder(nef=16, ndf=4, image_size=64).eval()
    fakes = [torch.randn(B, 3, s, s, requires_grad=True) for s in (64, 128, 256)]
    words, sent = torch.randn(B, 16, 6, requires_grad=True), torch.randn(B, 16)
    cap_lens = torch.tensor([6, 3, 5, 2])
    class_ids = np.array([1, 2, 1, 3])
    lam = 5.0
    total, logs = generator_loss(
        nets, enc, fakes, words, sent, cap_lens, class_ids, lambda_=lam, gamma1=G1, gamma2=G2,
        gamma3=G3, original_loop=original_loop,
    )  # fmt: skip
    want = 0.0
    for i, d in enumerate(nets):
        features = d(fakes[i])
        g_loss = bce(d.UNCOND_DNET(features), 1) + bce(d.COND_DNET(features, sent), 1)
        torch.testing.assert_close(logs[f"g_loss{i}"].double(), g_loss)
        want = want + g_loss
    local, code = enc(fakes[2])
    labels, ids = torch.arange(B), torch.from_numpy(class_ids)
    w0, w1, _, _ = original.words_loss(local, words, labels, cap_lens, ids, B, G1, G2, G3)
    s0, s1 = original.sent_loss(code, sent, labels, ids, B, G3)
    want = want + lam * (w0 + w1) + lam * (s0 + s1)
    torch.testing.assert_close(total.double(), want.double(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(logs["w_loss"], lam * (w0 + w1), rtol=1e-5, atol=1e-5)
    total.backward()
    assert words.grad is None  # text embeddings detached
    assert all(f.grad is not None and f.grad.abs().sum() > 0 for f in fakes)


def test_words_and_sent_loss_wrappers():
    local, code = torch.randn(B, 8, 5, 5), torch.randn(B, 8)
    words, sent = torch.randn(B, 8, 7), torch.randn(B, 8)
    cap_lens, ids = torch.tensor([7, 2, 4, 5]), torch.tensor([0, 1, 0, 2])
    labels = torch.arange(B)
    w0, w1, maps = words_loss(local, words, cap_lens, ids, G1, G2, G3)
    r0, r1, ref_maps, _ = original.words_loss(local, words, labels, cap_lens, ids, B, G1, G2, G3)
    torch.testing.assert_close((w0, w1), (r0, r1), rtol=1e-5, atol=1e-5)
    assert maps.shape == (B, 7, 5, 5)
    for i, m in enumerate(ref_maps):
        torch.testing.assert_close(maps[i, : cap_lens[i]], m[0], rtol=1e-5, atol=1e-6)
    got = sent_loss(code, sent, ids.numpy(), G3)
    torch.testing.assert_close(got, original.sent_loss(code, sent, labels, ids, B, G3))
    torch.testing.assert_close(
        sent_loss(code, sent, None, G3), original.sent_loss(code, sent, labels, None, B, G3)
    )


@pytest.mark.parametrize("class_ids", [None, np.array([0, 1, 0, 2])])
def test_damsm_terms_fused_and_original_loop_agree(class_ids):
    local, code = torch.randn(B, 8, 5, 5), torch.randn(B, 8)
    words, sent = torch.randn(B, 8, 7), torch.randn(B, 8)
    cap_lens = torch.tensor([7, 2, 4, 5])
    fused = damsm_terms(local, code, words, sent, cap_lens, class_ids, G1, G2, G3)
    loop = damsm_terms(
        local, code, words, sent, cap_lens, class_ids, G1, G2, G3, original_loop=True
    )
    assert len(fused) == len(loop) == 4
    torch.testing.assert_close(fused, loop, rtol=1e-5, atol=1e-5)
    labels, ids = torch.arange(B), None if class_ids is None else torch.from_numpy(class_ids)
    w0, w1, _, _ = original.words_loss(local, words, labels, cap_lens, ids, B, G1, G2, G3)
    torch.testing.assert_close(loop[:2], (w0, w1), rtol=0, atol=0)  # the loop itself
