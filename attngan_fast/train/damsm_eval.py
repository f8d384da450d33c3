"""DAMSM pretraining's evaluation on the test split, and the best encoders it keeps.

After every epoch, each test image is paired with its first caption; the image encoder's global
codes and the text encoder's sentence codes give (``runtime.retrieval``):

- R@1, text -> image: the caption's own image is the nearest (cosine) of all test images;
- R@1, image -> text: the image's own caption is the nearest of all those captions;
- R-precision: each image ranks its caption against up to 99 captions of other classes.

The epoch with the highest R-precision (R@1 text -> image when the split is too small for
R-precision) is kept as ``text_encoder_best.pth`` / ``image_encoder_best.pth``, and
``best_encoders.json`` says which epoch and step it was, with its scores.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from attngan_fast.data.dataset import CaptionedImageDataset
from attngan_fast.runtime import checkpoint as ckpt
from attngan_fast.runtime.retrieval import (
    encode_captions,
    encode_images,
    r_precision,
    recall_at_1,
)

BEST_FILE = "best_encoders.json"
BEST_TEXT, BEST_IMAGE = "text_encoder_best.pth", "image_encoder_best.pth"


@dataclass
class RetrievalScores:
    """Text-image retrieval on a test split (percent); ``r_precision`` is None when the split
    has too few captions of other classes for even one mismatched candidate."""

    r1_text_to_image: float
    r1_image_to_text: float
    r_precision: float | None
    candidates: int
    images: int

    @property
    def criterion(self) -> float:
        """What the best epoch maximises: R-precision, else R@1 text -> image."""
        return self.r_precision if self.r_precision is not None else self.r1_text_to_image

    def summary(self) -> str:
        rp = "n/a" if self.r_precision is None else f"{self.r_precision:.1f} %"
        return (
            f"R@1 text->image {self.r1_text_to_image:.1f} %, image->text "
            f"{self.r1_image_to_text:.1f} %, R-precision {rp} ({self.candidates} candidates, "
            f"{self.images} images)"
        )


@torch.no_grad()
def retrieval_scores(
    text_encoder: nn.Module,
    image_encoder: nn.Module,
    dataset: CaptionedImageDataset,
    batch_size: int = 50,
    n_candidates: int = 100,
    seed: int = 0,
) -> RetrievalScores:
    """Retrieval between the split's images (the last branch, no augmentation) and their first
    captions, with both encoders in eval mode (their modes are restored afterwards)."""
    modes = text_encoder.training, image_encoder.training
    text_encoder.eval()
    image_encoder.eval()
    try:
        n = len(dataset)
        batches = (
            torch.stack([dataset[i].images[-1] for i in range(s, min(s + batch_size, n))])
            for s in range(0, n, batch_size)
        )
        image_codes = encode_images(image_encoder, batches)
        cpi = dataset.captions_per_image
        captions = [dataset.captions[i * cpi] for i in range(n)]
        sent_codes = encode_captions(text_encoder, captions, batch_size)
    finally:
        text_encoder.train(modes[0])
        image_encoder.train(modes[1])
    t2i, i2t = recall_at_1(image_codes, sent_codes)
    classes = np.asarray(dataset.class_ids)
    others = min(int((classes != c).sum()) for c in classes)
    candidates = min(n_candidates, others + 1)
    rp = None
    if candidates >= 2:
        result = r_precision(
            image_codes, sent_codes, classes, n_candidates=candidates, n_folds=1, seed=seed
        )
        rp = result.mean
    return RetrievalScores(t2i, i2t, rp, candidates, n)


def save_best(
    folder: Path, text: nn.Module, image: nn.Module, epoch: int, step: int, scores: RetrievalScores
) -> Path:
    """Write the best encoders and ``best_encoders.json`` (epoch, step, scores) into ``folder``."""
    ckpt.save_atomic(text.state_dict(), folder / BEST_TEXT)
    ckpt.save_atomic(image.state_dict(), folder / BEST_IMAGE)
    path = folder / BEST_FILE
    record = {"epoch": epoch, "step": step, **asdict(scores)}
    path.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return path
