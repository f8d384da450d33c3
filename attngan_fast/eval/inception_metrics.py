"""Inception score and Fréchet Inception distance, from a local Inception-v3 weights file.

No weights are downloaded: the user passes a file (``load_inception``), a state dict of
torchvision's ``inception_v3`` or of any Inception-v3 with the same layer names (a classifier
fine-tuned on birds, with its own number of classes, included). Images in [-1, 1] are resized
bilinearly to 299 x 299 and fed as they are (the range Inception-v3 was trained on).

- IS (Salimans et al. 2016): the images are cut into ``splits`` (10) parts; per part
  exp(mean_x KL(p(y|x) || p(y))), p(y) the part's mean prediction; mean and std over parts.
- FID (Heusel et al. 2017): ||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)) of the pool3
  (2048-d) features' means and covariances, computed in float64.

The numbers match the published ones only with the published networks: the TensorFlow Inception
of the IS papers (and StackGAN's birds-fine-tuned one for CUB) and pytorch-fid's FID Inception,
whose pooling differs slightly from torchvision's; weights converted to this layout give the same
kind of number, not necessarily the same digits.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from attngan_fast.models.inception import Inception3, load_inception_weights
from attngan_fast.runtime.checkpoint import load_torch_file


class ScoreWithStd(NamedTuple):
    mean: float
    std: float


def inception_score(probs_or_logits: Tensor, splits: int = 10, logits: bool = True) -> ScoreWithStd:
    """IS of N predictions (N x K logits, or probabilities with ``logits=False``) in ``splits``
    near-equal consecutive parts: mean and (population) std of exp(E_x KL(p(y|x) || p(y)))."""
    x = probs_or_logits.detach().double().cpu()
    if x.dim() != 2 or x.shape[0] == 0:
        raise ValueError(f"predictions must be N x K with N >= 1, got shape {tuple(x.shape)}")
    if not 1 <= splits <= x.shape[0]:
        raise ValueError(f"splits must be between 1 and N = {x.shape[0]}, got {splits}")
    log_p = F.log_softmax(x, dim=1) if logits else x.clamp_min(1e-30).log()
    scores = []
    for part in torch.tensor_split(log_p, splits):
        log_py = torch.logsumexp(part, dim=0) - math.log(part.shape[0])  # log of the mean p(y)
        kl = (part.exp() * (part - log_py)).sum(dim=1).mean()
        scores.append(math.exp(kl.item()))
    return ScoreWithStd(float(np.mean(scores)), float(np.std(scores)))


def _sqrtm_psd(m: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric positive semi-definite matrix (eigenvalues < 0 -> 0)."""
    w, v = np.linalg.eigh(m)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance(mu1: np.ndarray, cov1: np.ndarray, mu2: np.ndarray, cov2: np.ndarray) -> float:
    """Fréchet distance of N(mu1, cov1) and N(mu2, cov2), float64.

    tr((S1 S2)^(1/2)) = tr((S1^(1/2) S2 S1^(1/2))^(1/2)), a symmetric PSD matrix: no complex
    square root as with scipy's sqrtm.
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    cov1, cov2 = np.atleast_2d(cov1).astype(np.float64), np.atleast_2d(cov2).astype(np.float64)
    if mu1.shape != mu2.shape or cov1.shape != cov2.shape or cov1.shape != mu1.shape * 2:
        raise ValueError(
            f"shapes do not match: mu {mu1.shape}, {mu2.shape}; cov {cov1.shape}, {cov2.shape}"
        )
    s1 = _sqrtm_psd(cov1)
    middle = s1 @ cov2 @ s1
    tr_covmean = np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0, None)).sum()
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(cov1) + np.trace(cov2) - 2 * tr_covmean)


def feature_statistics(features: Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """N x D features (N >= 2) -> (mean D, covariance D x D with the N - 1 denominator), float64."""
    f = np.asarray(features.detach().cpu() if isinstance(features, Tensor) else features)
    f = f.astype(np.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"features must be N x D with N >= 2, got shape {f.shape}")
    return f.mean(axis=0), np.cov(f, rowvar=False)


def fid_from_features(features1: Tensor | np.ndarray, features2: Tensor | np.ndarray) -> float:
    """FID of two feature sets (N1 x D and N2 x D)."""
    return frechet_distance(*feature_statistics(features1), *feature_statistics(features2))


def load_inception(weights: str | Path | None, device: str | torch.device = "cpu") -> Inception3:
    """Inception3 in eval mode with the weights of the local file ``weights``.

    The file holds a state dict (or ``{"state_dict": ...}``) with torchvision's layer names; the
    number of classes is read from ``fc.weight``. Raises ValueError when ``weights`` is None
    (nothing is ever downloaded) and FileNotFoundError when the file is missing.
    """
    if weights is None or str(weights) == "":
        raise ValueError(
            "Inception score and FID need Inception-v3 weights as a local file (no download): "
            "pass the path of a state dict with torchvision's inception_v3 layer names, e.g. "
            "one saved with torch.save(torchvision.models.inception_v3(weights='DEFAULT')"
            ".state_dict(), 'inception_v3.pth') on a machine with internet access"
        )
    path = Path(weights)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no Inception weights file there")
    state = load_torch_file(path, what="an Inception-v3 state dict")
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if "fc.weight" not in state:
        raise KeyError(f"{path}: no 'fc.weight' in the state dict; is it an Inception-v3?")
    model = Inception3(num_classes=state["fc.weight"].shape[0])
    load_inception_weights(model, state)
    return model.to(device).eval()


class InceptionOutputs(NamedTuple):
    pool3: Tensor  # N x 2048, float32 on the CPU
    logits: Tensor  # N x K


@torch.no_grad()
def inception_outputs(
    model: Inception3, batches: Iterable[Tensor], device: str | torch.device | None = None
) -> InceptionOutputs:
    """pool3 features and logits of image batches (B x 3 x H x W in [-1, 1], any H, W)."""
    device = device if device is not None else next(model.parameters()).device
    pools, logits = [], []
    for images in batches:
        x = images.to(device, torch.float32)
        if x.shape[-2:] != (299, 299):
            x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        out = model.features(x)
        pools.append(out.pool3.float().cpu())
        logits.append(out.logits.float().cpu())
    if not pools:
        raise ValueError("no images given")
    return InceptionOutputs(torch.cat(pools), torch.cat(logits))


class InceptionMetrics(NamedTuple):
    inception_score: ScoreWithStd
    fid: float | None  # None without reference images


def inception_metrics(
    model: Inception3,
    fake_batches: Iterable[Tensor],
    real_batches: Iterable[Tensor] | None = None,
    splits: int = 10,
) -> InceptionMetrics:
    """IS of the generated images and, when real images are given, their FID to them."""
    fake = inception_outputs(model, fake_batches)
    fid = None
    if real_batches is not None:
        fid = fid_from_features(fake.pool3, inception_outputs(model, real_batches).pool3)
    return InceptionMetrics(inception_score(fake.logits, splits), fid)
