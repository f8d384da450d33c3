"""Text-image retrieval with the DAMSM encoders' global codes: R-precision and recall at 1.

Shared by evaluation (``eval.r_precision``: R-precision of generated images, DM-GAN's protocol)
and DAMSM pretraining (retrieval between real test images and their captions after every
epoch). ``r_precision`` and ``recall_at_1`` take precomputed codes; ``encode_images`` and
``encode_captions`` produce them with the DAMSM encoders.

R-precision: each image ranks its true caption against ``n_candidates - 1`` captions drawn at
random from a pool of captions of OTHER classes; a hit when the true one scores strictly higher
than every other (ties are misses, so a constant encoder scores 0); mean and population std of
the hit rates of ``n_folds`` consecutive folds, in percent.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn


class RPrecision(NamedTuple):
    mean: float  # percent
    std: float  # percent, over folds
    folds: list[float]  # each fold's hit rate, percent
    hits: Tensor  # N bool, per image


def _class_array(ids: Sequence[int] | Tensor | np.ndarray | None, n: int, name: str) -> np.ndarray:
    if ids is None:
        return np.arange(n)
    arr = np.asarray(ids.cpu() if isinstance(ids, Tensor) else ids).reshape(-1)
    if arr.shape[0] != n:
        raise ValueError(f"{name} has {arr.shape[0]} entries for {n} codes")
    return arr


def sample_mismatched(
    class_ids: np.ndarray, pool_class_ids: np.ndarray, k: int, rng: np.random.Generator
) -> np.ndarray:
    """N x k indices into the pool: for image i, k distinct pool entries of a class != class_ids[i].

    Raises ValueError when an image's class leaves fewer than k pool entries.
    """
    out = np.empty((len(class_ids), k), dtype=np.int64)
    by_class: dict[object, np.ndarray] = {}
    for i, c in enumerate(class_ids):
        if c not in by_class:
            by_class[c] = np.flatnonzero(pool_class_ids != c)
            if len(by_class[c]) < k:
                raise ValueError(
                    f"class {c!r} has only {len(by_class[c])} captions of other classes in the "
                    f"pool, fewer than the {k} mismatched captions needed: use fewer candidates "
                    "or a larger caption pool"
                )
        others = by_class[c]
        out[i] = others[rng.choice(len(others), size=k, replace=False)]
    return out


def r_precision(
    image_codes: Tensor,
    sent_codes: Tensor,
    class_ids: Sequence[int] | Tensor | np.ndarray | None = None,
    pool_codes: Tensor | None = None,
    pool_class_ids: Sequence[int] | Tensor | np.ndarray | None = None,
    n_candidates: int = 100,
    n_folds: int = 10,
    seed: int = 0,
    chunk: int = 1024,
) -> RPrecision:
    """R-precision of N images (``image_codes`` N x D) generated from the captions with sentence
    embeddings ``sent_codes`` N x D.

    class_ids: N, each image's class (None: every image its own class). The mismatched captions
    come from ``pool_codes`` M x D with ``pool_class_ids`` M (default: the N true captions and
    ``class_ids``). ``seed`` fixes the draw of mismatched captions.
    """
    if image_codes.dim() != 2 or image_codes.shape != sent_codes.shape:
        raise ValueError(
            "image_codes and sent_codes must both be N x D, got "
            f"{tuple(image_codes.shape)} and {tuple(sent_codes.shape)}"
        )
    n = image_codes.shape[0]
    if n_candidates < 2:
        raise ValueError(f"n_candidates must be >= 2, got {n_candidates}")
    if not 1 <= n_folds <= n:
        raise ValueError(f"n_folds must be between 1 and the number of images {n}, got {n_folds}")
    classes = _class_array(class_ids, n, "class_ids")
    if pool_codes is None:
        if pool_class_ids is not None:
            raise ValueError("pool_class_ids given without pool_codes")
        pool_codes, pool_classes = sent_codes, classes
    else:
        if pool_codes.dim() != 2 or pool_codes.shape[1] != sent_codes.shape[1]:
            raise ValueError(f"pool_codes must be M x {sent_codes.shape[1]}")
        pool_classes = _class_array(pool_class_ids, pool_codes.shape[0], "pool_class_ids")
    wrong = sample_mismatched(classes, pool_classes, n_candidates - 1, np.random.default_rng(seed))

    img = F.normalize(image_codes.detach().double().cpu(), dim=1)
    true = F.normalize(sent_codes.detach().double().cpu(), dim=1)
    pool = F.normalize(pool_codes.detach().double().cpu(), dim=1)
    hits = torch.empty(n, dtype=torch.bool)
    for start in range(0, n, chunk):
        sl = slice(start, start + chunk)
        cand = pool[torch.from_numpy(wrong[sl])]  # n' x (k - 1) x D
        s_true = (img[sl] * true[sl]).sum(dim=1)
        s_wrong = torch.einsum("nd,nkd->nk", img[sl], cand)
        hits[sl] = s_true > s_wrong.amax(dim=1)
    folds = [100.0 * f.double().mean().item() for f in torch.tensor_split(hits, n_folds)]
    return RPrecision(float(np.mean(folds)), float(np.std(folds)), folds, hits)


@torch.no_grad()
def encode_images(image_encoder: nn.Module, batches: Iterable[Tensor]) -> Tensor:
    """Global codes (N x D, float32 on the CPU) of image batches (B x 3 x H x W in [-1, 1]) by a
    DAMSM image encoder returning (local, global), in eval mode."""
    device = next(image_encoder.parameters()).device
    codes = [image_encoder(x.to(device, torch.float32))[1].float().cpu() for x in batches]
    if not codes:
        raise ValueError("no images given")
    return torch.cat(codes)


@torch.no_grad()
def encode_captions(
    text_encoder: nn.Module, captions: Sequence[Sequence[int]], batch_size: int = 256
) -> Tensor:
    """Sentence embeddings (N x D, float32 on the CPU) of captions given as word-index lists
    (no padding, each non-empty) by a DAMSM text encoder (``RNN_ENCODER``) in eval mode."""
    if not captions:
        raise ValueError("no captions given")
    device = next(text_encoder.parameters()).device
    out = []
    for start in range(0, len(captions), batch_size):
        ids, lens = pad_captions(captions[start : start + batch_size])
        out.append(text_encoder(ids.to(device), lens.to(device))[1].float().cpu())
    return torch.cat(out)


def pad_captions(captions: Sequence[Sequence[int]]) -> tuple[Tensor, Tensor]:
    """Word-index lists -> (B x T LongTensor zero-padded, lengths B). Raises on an empty caption."""
    lens = [len(c) for c in captions]
    if min(lens) == 0:
        raise ValueError(f"caption {lens.index(0)} of the batch is empty")
    ids = torch.zeros(len(captions), max(lens), dtype=torch.long)
    for i, c in enumerate(captions):
        ids[i, : len(c)] = torch.as_tensor(list(c), dtype=torch.long)
    return ids, torch.as_tensor(lens, dtype=torch.long)


def recall_at_1(image_codes: Tensor, sent_codes: Tensor) -> tuple[float, float]:
    """Recall at 1 (percent) of N matched pairs (row i of ``image_codes`` N x D and of
    ``sent_codes`` N x D): (text -> image: the caption's own image has the strictly highest
    cosine among all N images; image -> text: likewise for the image's own caption)."""
    if image_codes.dim() != 2 or image_codes.shape != sent_codes.shape:
        raise ValueError(
            "image_codes and sent_codes must both be N x D, got "
            f"{tuple(image_codes.shape)} and {tuple(sent_codes.shape)}"
        )
    img = F.normalize(image_codes.detach().double().cpu(), dim=1)
    sent = F.normalize(sent_codes.detach().double().cpu(), dim=1)
    sims = sent @ img.T  # N captions x N images
    own = sims.diagonal()
    eye = torch.eye(len(own), dtype=torch.bool)
    others = sims.masked_fill(eye, float("-inf"))
    text_to_image = (own > others.amax(dim=1)).double().mean().item()
    image_to_text = (own > others.amax(dim=0)).double().mean().item()
    return 100.0 * text_to_image, 100.0 * image_to_text
