"""Map-style dataset of captioned images, and batching (the original's ``prepare_data``).

A sample is one image (one tensor per generator branch) with one of its captions drawn at random.
Loaders for the dataset layouts (CUB, COCO, a plain folder) build a :class:`CaptionedImageDataset`.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import torch
from PIL import Image
from torch.utils.data import Dataset

from attngan_fast.data.images import BBox, BranchImages
from attngan_fast.data.vocab import Vocabulary


class Sample(NamedTuple):
    """One training example."""

    images: list[torch.Tensor]  # per branch: float32 3×s×s in [-1, 1] (s = 64, 128, 256)
    caption: torch.Tensor  # int64 (words_num,), word indices, 0-padded
    cap_len: int  # number of words in ``caption`` (1 … words_num)
    class_id: int
    key: str  # the image's name in the layout, e.g. '001.Black_footed_Albatross/Black_..._0046_18'


class Batch(NamedTuple):
    """A collated batch of B samples."""

    images: list[torch.Tensor]  # per branch: float32 B×3×s×s
    captions: torch.Tensor  # int64 B×words_num
    cap_lens: torch.Tensor  # int64 B
    class_ids: torch.Tensor  # int64 B
    keys: list[str]
    order: torch.Tensor  # int64 B: row i holds the sample at position order[i] of the collated list


def collate(samples: Sequence[Sample], *, sort: bool = False) -> Batch:
    """Stack samples into a :class:`Batch` (a DataLoader ``collate_fn``); optionally sorted."""
    if not samples:
        raise ValueError("cannot collate an empty list of samples")
    batch = Batch(
        images=[torch.stack(branch) for branch in zip(*(s.images for s in samples))],
        captions=torch.stack([s.caption for s in samples]),
        cap_lens=torch.tensor([s.cap_len for s in samples], dtype=torch.int64),
        class_ids=torch.tensor([s.class_id for s in samples], dtype=torch.int64),
        keys=[s.key for s in samples],
        order=torch.arange(len(samples)),
    )
    return sort_by_caption_length(batch) if sort else batch


def sort_by_caption_length(batch: Batch) -> Batch:
    """Reorder a batch by caption length, longest first (stable), as packed RNNs need.

    ``order`` is composed, so it still maps each row to its position in the collated list.
    """
    _, perm = torch.sort(batch.cap_lens, descending=True, stable=True)
    return Batch(
        images=[img[perm] for img in batch.images],
        captions=batch.captions[perm],
        cap_lens=batch.cap_lens[perm],
        class_ids=batch.class_ids[perm],
        keys=[batch.keys[i] for i in perm.tolist()],
        order=batch.order[perm],
    )


def prepare_batch(
    batch: Batch, device: torch.device | str | None = None, *, sort: bool = True
) -> Batch:
    """The original's ``prepare_data``: sort by caption length (descending), move to ``device``.

    Images, captions, cap_lens and class_ids move; ``keys`` and ``order`` stay on the CPU.
    """
    if sort:
        batch = sort_by_caption_length(batch)
    if device is None:
        return batch
    non_blocking = torch.device(device).type == "cuda"
    return Batch(
        images=[img.to(device, non_blocking=non_blocking) for img in batch.images],
        captions=batch.captions.to(device, non_blocking=non_blocking),
        cap_lens=batch.cap_lens.to(device, non_blocking=non_blocking),
        class_ids=batch.class_ids.to(device, non_blocking=non_blocking),
        keys=batch.keys,
        order=batch.order,
    )


class CaptionList(Sequence[list[int]]):
    """Read-only list of captions (word-index lists) stored as two flat int64 tensors.

    Python lists of ints would be copied into every DataLoader worker as their reference counts
    change; tensors are shared.
    """

    def __init__(self, captions: Sequence[Sequence[int]]):
        lengths = torch.tensor([len(c) for c in captions], dtype=torch.int64)
        self.lengths = lengths
        self._words = torch.tensor([w for c in captions for w in c], dtype=torch.int64)
        self._offsets = torch.cat([torch.zeros(1, dtype=torch.int64), lengths.cumsum(0)])

    def __len__(self) -> int:
        return len(self.lengths)

    def tensor(self, j: int) -> torch.Tensor:
        """Caption ``j`` as an int64 tensor (a view, no copy)."""
        if not -len(self) <= j < len(self):
            raise IndexError(f"caption {j} out of range ({len(self)} captions)")
        j %= len(self)
        return self._words[self._offsets[j] : self._offsets[j + 1]]

    def __getitem__(self, j):  # int → list[int]; slice → list of list[int]
        if isinstance(j, slice):
            return [self[i] for i in range(*j.indices(len(self)))]
        return self.tensor(j).tolist()


class CaptionedImageDataset(Dataset):
    """Images with ``captions_per_image`` captions each; a sample draws one caption at random.

    Args:
        image_paths: one image file per item.
        keys: the item names (e.g. CUB's ``<class>/<name>``), same length.
        captions: word-index lists, ``captions_per_image`` consecutive entries per item.
        captions_per_image: number of captions of each item.
        vocab: the vocabulary the indices refer to.
        class_ids: class of each item (DAMSM masks same-class pairs).
        bboxes: per item, a box to crop around (x, y, w, h) or None; None for no crop at all.
        words_num: caption length T; longer captions keep a random order-preserving subset of T
            words, shorter ones are padded with 0 (``<end>``).
        images: the image pipeline (branch sizes, augmentation).
        source: where the captions came from (a captions.pickle path), for error messages.

    An image that cannot be decoded is skipped: the next item is returned instead and a
    RuntimeWarning names it and the count so far (``skipped`` holds the paths, per process).
    """

    def __init__(
        self,
        *,
        image_paths: Sequence[Path],
        keys: Sequence[str],
        captions: Sequence[Sequence[int]],
        captions_per_image: int,
        vocab: Vocabulary,
        class_ids: Sequence[int],
        bboxes: Sequence[BBox | None] | None = None,
        words_num: int,
        images: BranchImages,
        source: str,
    ):
        n = len(keys)
        if n == 0:
            raise ValueError(f"{source}: the split has no images")
        lengths = {len(image_paths), len(class_ids), n if bboxes is None else len(bboxes)}
        if lengths != {n}:
            raise ValueError("image_paths, keys, class_ids and bboxes must have one entry per item")
        if captions_per_image < 1 or words_num < 1:
            raise ValueError("captions_per_image and words_num must be >= 1")
        if len(captions) != n * captions_per_image:
            raise ValueError(
                f"{source}: {len(captions)} captions for {n} images × {captions_per_image} "
                "captions per image; the caption file does not match the split's file list "
                "(delete captions.pickle to rebuild it)"
            )
        caption_list = CaptionList(captions)
        if (caption_list.lengths == 0).any():
            j = int((caption_list.lengths == 0).nonzero()[0])
            key = keys[j // captions_per_image]
            raise ValueError(f"{source}: caption {j % captions_per_image} of {key!r} is empty")
        missing = [p for p in image_paths if not Path(p).is_file()]
        if missing:
            raise FileNotFoundError(
                f"{missing[0]}: image not found ({len(missing)} of {n} missing); {source}"
            )
        self.image_paths = [Path(p) for p in image_paths]
        self.keys = list(keys)
        self.captions = caption_list  # captions[i * captions_per_image + j]: list of word ids
        self.captions_per_image = captions_per_image
        self.vocab = vocab
        self.class_ids = [int(c) for c in class_ids]
        self.bboxes = list(bboxes) if bboxes is not None else None
        self.words_num = words_num
        self.images = images
        self.skipped: set[Path] = set()

    @property
    def n_words(self) -> int:
        """Vocabulary size (the text encoder's embedding rows)."""
        return len(self.vocab)

    def __len__(self) -> int:
        return len(self.keys)

    def caption(self, index: int, which: int | None = None) -> tuple[torch.Tensor, int]:
        """Caption ``which`` (random if None) of item ``index``: (int64 (words_num,), length)."""
        if which is None:
            which = int(torch.randint(0, self.captions_per_image, (1,)))
        words = self.captions.tensor(index * self.captions_per_image + which)
        out = torch.zeros(self.words_num, dtype=torch.int64)
        if len(words) <= self.words_num:
            out[: len(words)] = words
            return out, len(words)
        keep = torch.randperm(len(words))[: self.words_num].sort().values
        out[:] = words[keep]
        return out, self.words_num

    def _load(self, index: int) -> list[torch.Tensor] | None:
        path = self.image_paths[index]
        try:
            with Image.open(path) as im:
                img = im.convert("RGB")
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
            self.skipped.add(path)
            warnings.warn(
                f"skipped unreadable image {path} ({exc}); {len(self.skipped)} unreadable "
                "image(s) skipped so far",
                RuntimeWarning,
                stacklevel=3,
            )
            return None
        return self.images(img, self.bboxes[index] if self.bboxes is not None else None)

    def __getitem__(self, index: int) -> Sample:
        for step in range(len(self)):
            i = (index + step) % len(self)
            imgs = self._load(i)
            if imgs is not None:
                caption, cap_len = self.caption(i)
                return Sample(imgs, caption, cap_len, self.class_ids[i], self.keys[i])
        raise RuntimeError(f"no readable image among the {len(self)} images of the dataset")
