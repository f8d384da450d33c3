"""Open a training split in any supported layout and batch it resumably.

Layouts (``attngan_fast.data``): ``cub`` (CUB birds and SynthBirds), ``coco``, ``folder`` (a
plain ``images/`` folder with a caption file beside each image); ``auto`` recognises them by
their files.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import DataLoader

from attngan_fast.config import Config
from attngan_fast.data.dataset import CaptionedImageDataset, collate
from attngan_fast.data.folder import load_folder_dataset
from attngan_fast.data.text_image import load_text_image_dataset
from attngan_fast.runtime.sampler import ResumableSampler

LAYOUTS = ("auto", "cub", "coco", "folder")


def detect_layout(root: str | Path) -> str:
    """``cub`` if ``root/CUB_200_2011`` exists, ``coco`` for ``images/`` + ``text/``, else
    ``folder`` for ``images/`` alone; FileNotFoundError naming what was looked for otherwise."""
    root = Path(root)
    if (root / "CUB_200_2011").is_dir():
        return "cub"
    if (root / "images").is_dir():
        return "coco" if (root / "text").is_dir() else "folder"
    raise FileNotFoundError(
        f"{root}: not a dataset folder; expected {root / 'CUB_200_2011'} (CUB layout, also "
        f"SynthBirds), {root / 'images'} with {root / 'text'} (COCO layout) or {root / 'images'} "
        "with a .txt of captions beside each image (folder layout)"
    )


def load_dataset(
    root: str | Path,
    cfg: Config,
    split: str = "train",
    layout: str = "auto",
    augment: bool = True,
    flip: bool = True,
) -> CaptionedImageDataset:
    """Split ``split`` of the dataset at ``root`` with images for cfg's branches
    (TREE.BASE_SIZE * 2^i, i < TREE.BRANCH_NUM) and captions of TEXT.WORDS_NUM words.
    ``augment``: random crop and (unless ``flip`` is False) left-right flip."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    if layout == "auto":
        layout = detect_layout(root)
    sizes = {"base_size": cfg.TREE.BASE_SIZE, "branch_num": cfg.TREE.BRANCH_NUM}
    if layout == "folder":
        return load_folder_dataset(
            root, split, words_num=cfg.TEXT.WORDS_NUM, augment=augment, flip=flip, **sizes
        )
    return load_text_image_dataset(
        root,
        split,
        layout,
        words_num=cfg.TEXT.WORDS_NUM,
        captions_per_image=cfg.TEXT.CAPTIONS_PER_IMAGE,
        augment=augment,
        flip=flip,
        **sizes,
    )


def make_loader(
    dataset: CaptionedImageDataset,
    sampler: ResumableSampler,
    batch_size: int,
    workers: int = 0,
) -> DataLoader:
    """Batches of ``batch_size`` (last partial batch dropped, as the original) in sampler order.

    The loader draws its worker seeds from its own generator, seeded by the sampler's seed and
    epoch, never from torch's global generator, so building it does not disturb a resumed run.
    With ``workers == 0`` a resumed run is bit-for-bit the uninterrupted one; with workers the
    augmentation of a resumed epoch differs (each worker's generator restarts).
    """
    if len(sampler) < batch_size:
        raise ValueError(
            f"the dataset has {len(sampler)} images per process, fewer than one batch of "
            f"{batch_size}; lower TRAIN.BATCH_SIZE"
        )
    generator = torch.Generator()
    generator.manual_seed(sampler.seed * 100_003 + sampler.epoch)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        collate_fn=collate,
        drop_last=True,
        generator=generator,
        pin_memory=torch.cuda.is_available(),
    )
