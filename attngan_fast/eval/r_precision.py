"""R-precision (Xu et al., CVPR 2018) by the protocol of DM-GAN (Zhu et al., CVPR 2019).

For each generated image, the DAMSM image encoder's global code ranks ``n_candidates`` (100)
captions by cosine similarity with their sentence embeddings: the caption the image was generated
from and ``n_candidates - 1`` captions drawn at random, without repetition, from a pool of
captions of images of OTHER classes (datasets without classes, like COCO: give every image its
own class). A hit is when the true caption scores strictly higher than every other candidate (ties
count as misses, so a constant encoder scores 0, not 100 %). The images are cut into ``n_folds``
(10) near-equal consecutive folds; the result is the mean and (population) std of the folds' hit
rates, in percent. DM-GAN uses 30,000 images in 10 folds of 3,000; any size works here.

``r_precision`` takes precomputed codes; ``encode_images`` and ``encode_captions`` produce them
with the DAMSM encoders.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
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


def caption_choice(n_images: int, n_items: int, captions_per_image: int, seed: int) -> np.ndarray:
    """Which caption generates each of ``n_images`` images: item k % n_items (cycling through
    the split) and one of its captions drawn at random -> indices into the flat caption list."""
    rng = np.random.default_rng(seed)
    items = np.arange(n_images) % n_items
    return items * captions_per_image + rng.integers(0, captions_per_image, size=n_images)


@torch.no_grad()
def evaluate_r_precision(
    generate_fn: Callable[[Tensor, Tensor], Tensor],
    image_encoder: nn.Module,
    text_encoder: nn.Module,
    captions: Sequence[Sequence[int]],
    class_ids: Sequence[int],
    captions_per_image: int,
    n_images: int | None = None,
    n_candidates: int = 100,
    n_folds: int = 10,
    batch_size: int = 50,
    seed: int = 0,
) -> RPrecision:
    """R-precision of a generator on a dataset split (DM-GAN: 30,000 images, 10 folds).

    captions: the split's captions (word-index lists), ``captions_per_image`` consecutive ones
    per item; class_ids: each item's class. Image k is generated from a random caption of item
    k % n_items (default n_images: one per item); the mismatched captions are drawn from all of
    the split's captions of other classes. Captions are used whole (no WORDS_NUM cut). Only
    codes are kept, not images, so any number of images fits in memory.
    """
    n_items = len(class_ids)
    if len(captions) != n_items * captions_per_image:
        raise ValueError(
            f"{len(captions)} captions for {n_items} items x {captions_per_image} per item"
        )
    n_images = n_items if n_images is None else n_images
    chosen = caption_choice(n_images, n_items, captions_per_image, seed)
    pool_codes = encode_captions(text_encoder, captions, batch_size=max(batch_size, 256))
    pool_classes = np.repeat(np.asarray(class_ids), captions_per_image)
    image_codes = []
    for start in range(0, n_images, batch_size):
        ids, lens = pad_captions([captions[i] for i in chosen[start : start + batch_size]])
        image_codes.append(encode_images(image_encoder, [generate_fn(ids, lens)]))
    return r_precision(
        torch.cat(image_codes),
        pool_codes[torch.from_numpy(chosen)],
        pool_classes[chosen],
        pool_codes,
        pool_classes,
        n_candidates=n_candidates,
        n_folds=n_folds,
        seed=seed,
    )
