"""A plain folder of captioned images.

Layout: ``<root>/images/<name>.jpg`` (or ``.jpeg``, ``.png``) with its captions beside it in
``<root>/images/<name>.txt``, one a line. No bounding boxes; every image is its own class.

The train/test split is deterministic: names sorted, shuffled by ``random.Random(split_seed)``, the
first ``round(n · test_ratio)`` go to test. On first use the split and the vocabulary are cached in
the folder in the original's format: ``<root>/{train,test}/filenames.pickle`` and
``<root>/captions.pickle``; when the images or the split change, the cache is rebuilt with a warning
(edit a caption? delete captions.pickle). Every image gets as many captions as the image with the
most: an image with fewer repeats its own in turn (caption j is its caption j mod k).
"""

from __future__ import annotations

import random
import warnings
from collections.abc import Sequence
from pathlib import Path

from attngan_fast.data._io import dump_pickle, load_name_list, require_dir
from attngan_fast.data.captions import (
    CaptionSets,
    build_caption_sets,
    load_captions_pickle,
    read_caption_file,
    save_captions_pickle,
)
from attngan_fast.data.dataset import CaptionedImageDataset
from attngan_fast.data.images import BranchImages

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
FOLDER_LAYOUT = (
    "the folder layout expects <root>/images/<name>.jpg|.jpeg|.png, each with its captions in "
    "<root>/images/<name>.txt, one a line"
)
SPLITS = ("train", "test")


def list_images(root: Path) -> dict[str, Path]:
    """Name (file stem) → image path of ``<root>/images``, sorted by name."""
    image_dir = require_dir(root / "images", FOLDER_LAYOUT)
    found: dict[str, Path] = {}
    for path in sorted(image_dir.iterdir()):
        if path.suffix.lower() not in IMAGE_EXTENSIONS or not path.is_file():
            continue
        if path.stem in found:
            raise ValueError(f"{path} and {found[path.stem]}: two images named {path.stem!r}")
        found[path.stem] = path
    if not found:
        raise FileNotFoundError(f"{image_dir}: no image; {FOLDER_LAYOUT}")
    return found


def split_names(names: Sequence[str], test_ratio: float, seed: int = 0) -> dict[str, list[str]]:
    """Deterministic split: sorted names shuffled by ``seed``, ``round(n·test_ratio)`` to test."""
    if not 0.0 <= test_ratio < 1.0:
        raise ValueError(f"test_ratio must be in [0, 1), got {test_ratio}")
    order = sorted(names)
    random.Random(seed).shuffle(order)
    n_test = round(len(order) * test_ratio)
    return {"train": sorted(order[n_test:]), "test": sorted(order[:n_test])}


def _cycle(captions: list[list[str]], n: int) -> list[list[str]]:
    return [captions[j % len(captions)] for j in range(n)]


def _build_cache(root: Path, images: dict[str, Path], split: dict[str, list[str]]) -> CaptionSets:
    tokens = {}
    for s in SPLITS:
        tokens[s] = []
        for name in split[s]:
            text = images[name].with_suffix(".txt")
            caps = read_caption_file(text, expects=FOLDER_LAYOUT)
            if not caps:
                raise ValueError(f"{text}: no caption; {FOLDER_LAYOUT}")
            tokens[s].append(caps)
    cpi = max(len(c) for s in SPLITS for c in tokens[s])
    sets = build_caption_sets(
        [cap for caps in tokens["train"] for cap in _cycle(caps, cpi)],
        [cap for caps in tokens["test"] for cap in _cycle(caps, cpi)],
    )
    for s in SPLITS:
        dump_pickle(root / s / "filenames.pickle", split[s])
    save_captions_pickle(root / "captions.pickle", sets)
    return sets


def _cached(root: Path, split: dict[str, list[str]]) -> CaptionSets | None:
    """The cached captions if the cache exists and matches ``split``, else None."""
    paths = [root / s / "filenames.pickle" for s in SPLITS]
    if not (root / "captions.pickle").is_file() or not all(p.is_file() for p in paths):
        return None
    cached = [load_name_list(p, FOLDER_LAYOUT) for p in paths]
    if cached != [split[s] for s in SPLITS]:
        warnings.warn(
            f"{root}: the images or the split changed since captions.pickle was cached; "
            "rebuilding it (the vocabulary may change)",
            RuntimeWarning,
            stacklevel=3,
        )
        return None
    return load_captions_pickle(root / "captions.pickle")


def load_folder_dataset(
    root: str | Path,
    split: str = "train",
    *,
    test_ratio: float = 0.1,
    split_seed: int = 0,
    words_num: int = 18,
    base_size: int = 64,
    branch_num: int = 3,
    augment: bool = True,
    flip: bool = True,
) -> CaptionedImageDataset:
    """A split of a plain folder of captioned images (see the module docstring).

    Raises:
        FileNotFoundError: ``<root>/images`` or an image's caption file is missing.
        ValueError: a caption line without an ASCII word (message ``file:line``), or an image
            without any caption.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    root = require_dir(Path(root), FOLDER_LAYOUT)
    images = list_images(root)
    names = split_names(list(images), test_ratio, split_seed)
    sets = _cached(root, names)
    if sets is None:
        sets = _build_cache(root, images, names)
    n_total = len(images)
    cpi = (len(sets.train) + len(sets.test)) // n_total
    keys = names[split]
    return CaptionedImageDataset(
        image_paths=[images[k] for k in keys],
        keys=keys,
        captions=sets.split(split),
        captions_per_image=cpi,
        vocab=sets.vocab,
        class_ids=list(range(len(keys))),
        words_num=words_num,
        images=BranchImages(base_size, branch_num, augment, flip),
        source=f"{root / 'captions.pickle'} ({FOLDER_LAYOUT})",
    )
