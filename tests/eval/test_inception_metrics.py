"""Inception score and FID maths on small synthetic inputs with known answers."""

import math

import numpy as np
import pytest
import torch

from attngan_fast.eval.inception_metrics import (
    fid_from_features,
    frechet_distance,
    inception_metrics,
    inception_outputs,
    inception_score,
    load_inception,
)
from attngan_fast.models.inception import Inception3


def test_is_uniform_predictions_is_one():
    score = inception_score(torch.zeros(50, 7), splits=10)
    assert score.mean == pytest.approx(1.0, abs=1e-12)
    assert score.std == pytest.approx(0.0, abs=1e-12)


def test_is_confident_balanced_predictions_equals_class_count():
    k = 5
    probs = torch.eye(k)[torch.arange(100) % k]  # every split of 10 holds each class twice
    score = inception_score(probs, splits=10, logits=False)
    assert score.mean == pytest.approx(k, rel=1e-9)
    assert score.std == pytest.approx(0.0, abs=1e-9)


def test_is_identical_non_uniform_predictions_is_one():
    probs = torch.tensor([[0.7, 0.2, 0.1]]).repeat(30, 1)
    assert inception_score(probs, splits=3, logits=False).mean == pytest.approx(1.0, abs=1e-12)


def test_is_matches_the_improved_gan_formula():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(60, 11)) * 3
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    expected = []
    for part in np.array_split(p, 4):
        py = part.mean(0, keepdims=True)
        expected.append(math.exp(np.mean(np.sum(part * (np.log(part) - np.log(py)), 1))))
    got = inception_score(torch.from_numpy(logits), splits=4)
    assert got.mean == pytest.approx(np.mean(expected), rel=1e-9)
    assert got.std == pytest.approx(np.std(expected), rel=1e-6)
    from_probs = inception_score(torch.from_numpy(p), splits=4, logits=False)
    assert from_probs.mean == pytest.approx(got.mean, rel=1e-9)


def test_is_rejects_bad_splits():
    with pytest.raises(ValueError, match="splits"):
        inception_score(torch.zeros(5, 3), splits=6)


def test_fid_of_identical_feature_sets_is_zero():
    f = torch.randn(200, 16)
    assert abs(fid_from_features(f, f.clone())) < 1e-8


def test_fid_of_shifted_features_is_the_squared_shift():
    f = np.random.default_rng(2).normal(size=(300, 8))
    shift = np.arange(8) / 4
    assert fid_from_features(f, f + shift) == pytest.approx(float(shift @ shift), rel=1e-8)


def test_frechet_distance_diagonal_closed_form():
    rng = np.random.default_rng(3)
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    a, b = rng.uniform(0.1, 3, size=6), rng.uniform(0.1, 3, size=6)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(a + b - 2 * np.sqrt(a * b))
    got = frechet_distance(mu1, np.diag(a), mu2, np.diag(b))
    assert got == pytest.approx(expected, rel=1e-10)


def test_frechet_distance_scaled_full_covariance():
    rng = np.random.default_rng(4)
    m = rng.normal(size=(5, 5))
    cov = m @ m.T + 0.1 * np.eye(5)
    c = 2.5  # cov2 = c cov1 commutes with cov1: (1 - sqrt(c))^2 tr(cov1)
    got = frechet_distance(np.zeros(5), cov, np.zeros(5), c * cov)
    assert got == pytest.approx((1 - math.sqrt(c)) ** 2 * np.trace(cov), rel=1e-9)


def test_frechet_distance_general_case_matches_scipy():
    """Full, non-commuting covariances against scipy's sqrtm (scipy is in the test extra)."""
    from scipy import linalg

    rng = np.random.default_rng(5)
    m1, m2 = rng.normal(size=(6, 6)), rng.normal(size=(6, 6))
    cov1, cov2 = m1 @ m1.T, m2 @ m2.T
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    covmean = linalg.sqrtm(cov1 @ cov2).real
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(cov1 + cov2 - 2 * covmean)
    assert frechet_distance(mu1, cov1, mu2, cov2) == pytest.approx(expected, rel=1e-7)


def test_load_inception_requires_a_local_file(tmp_path):
    with pytest.raises(ValueError, match="local file"):
        load_inception(None)
    with pytest.raises(FileNotFoundError, match="no Inception weights"):
        load_inception(tmp_path / "missing.pth")


def test_inception_metrics_end_to_end_on_random_weights(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "inception.pth"
    torch.save(Inception3(num_classes=7).state_dict(), path)
    model = load_inception(path)
    assert model.fc.out_features == 7 and not model.training
    fake = torch.rand(2, 3, 32, 32) * 2 - 1
    result = inception_metrics(model, [fake[:1], fake[1:]], [fake], splits=1)
    outputs = inception_outputs(model, [torch.cat([fake, fake.flip(-1)])])
    log_p = torch.log_softmax(outputs.logits[:2].double(), dim=1).numpy()  # IS by hand, 1 split
    p = np.exp(log_p)  # random weights: near one-hot, so 0 log 0 terms are taken as 0
    terms = np.where(p > 0, p * (log_p - np.log(p.mean(0, keepdims=True))), 0.0)
    kl = terms.sum(1).mean()
    assert result.inception_score.mean == pytest.approx(math.exp(kl), rel=1e-6)
    assert result.inception_score.std == 0.0
    pool3 = outputs.pool3.double()
    assert pool3.shape == (4, 2048)
    scale = 2 * pool3[:2].var(dim=0).sum().item()  # tr(S1) + tr(S2): random weights, huge values
    assert abs(result.fid) <= 1e-4 * scale  # the same images: float32 rounding only
    assert fid_from_features(pool3[:2], pool3[2:]) > 1e-2 * scale  # mirrored images differ
