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
with the DAMSM encoders (all three live in ``runtime.retrieval``, shared with DAMSM pretraining).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from attngan_fast.runtime.retrieval import (
    RPrecision,
    encode_captions,
    encode_images,
    pad_captions,
    r_precision,
    sample_mismatched,
)

__all__ = [
    "RPrecision",
    "caption_choice",
    "encode_captions",
    "encode_images",
    "evaluate_r_precision",
    "pad_captions",
    "r_precision",
    "sample_mismatched",
]


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
