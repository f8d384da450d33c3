"""The original AttnGAN dataset layouts, CUB birds and COCO, read as its ``datasets.py`` does.

CUB (``<root>`` is the ``birds`` folder)::

    CUB_200_2011/images.txt            '<id> <class>/<name>.jpg' per line
    CUB_200_2011/bounding_boxes.txt    '<id> <x> <y> <width> <height>' per line
    CUB_200_2011/images/<class>/<name>.jpg
    text/<class>/<name>.txt            10 captions, one a line
    train/filenames.pickle, test/filenames.pickle    lists of '<class>/<name>'
    train/class_info.pickle, test/class_info.pickle  class id of each file (optional)
    captions.pickle                    [train_captions, test_captions, ixtoword, wordtoix]

COCO (``<root>`` is the ``coco`` folder): ``images/<key>.jpg``, ``text/<key>.txt`` (5 captions),
``{train,test}/filenames.pickle``, ``captions.pickle``; no class info, every image its own class.

captions.pickle is built from the text files on first use if missing (vocabulary of train and
test captions). Images of CUB are cropped around their bounding box.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from attngan_fast.data._io import load_name_list, load_pickle, require_dir, require_file
from attngan_fast.data.captions import (
    CaptionSets,
    build_caption_sets,
    load_captions_pickle,
    read_caption_file,
    save_captions_pickle,
)
from attngan_fast.data.dataset import CaptionedImageDataset
from attngan_fast.data.images import BBox, BranchImages
from attngan_fast.errors import FileFormatError

SPLITS = ("train", "test")


@dataclass(frozen=True)
class Layout:
    """Where a layout keeps its files (relative to the root) and its caption defaults."""

    name: str
    image_dir: str
    has_bbox: bool
    captions_per_image: int
    words_num: int
    description: str


LAYOUTS = {
    "cub": Layout(
        "cub",
        "CUB_200_2011/images",
        True,
        10,
        18,
        "the CUB layout expects <root>/CUB_200_2011/{images.txt, bounding_boxes.txt, "
        "images/<class>/<name>.jpg}, <root>/text/<class>/<name>.txt (10 captions) and "
        "<root>/{train,test}/filenames.pickle",
    ),
    "coco": Layout(
        "coco",
        "images",
        False,
        5,
        12,
        "the COCO layout expects <root>/images/<key>.jpg, <root>/text/<key>.txt (5 captions) and "
        "<root>/{train,test}/filenames.pickle",
    ),
}


def load_filenames(root: Path, split: str, layout: Layout) -> list[str]:
    """Keys of a split from ``<root>/<split>/filenames.pickle``."""
    return load_name_list(root / split / "filenames.pickle", layout.description)


CLASS_INFO_EXPECTS = "class_info.pickle lists one integer class id per file"


def load_class_ids(path: Path, n: int) -> list[int]:
    """Class id of each of ``n`` files from ``class_info.pickle``; without one, 0 … n-1.

    The file holds a list of ints or a numpy array (the original CUB file is a Python 2 pickle).
    """
    if not path.is_file():
        return list(range(n))
    raw = load_pickle(path, CLASS_INFO_EXPECTS)
    try:
        ids = np.asarray(raw)
    except ValueError as exc:  # a ragged nested list
        raise FileFormatError(f"{path}: {exc}; {CLASS_INFO_EXPECTS}") from None
    if ids.dtype.kind not in "iuf" or ids.ndim > 2 or not np.isfinite(ids).all():
        raise FileFormatError(f"{path}: holds {ids.dtype} values of shape {ids.shape}; "
                              f"{CLASS_INFO_EXPECTS}")  # fmt: skip
    ids = ids.ravel()
    if (ids != np.round(ids)).any() or (np.abs(ids) > 2**62).any():
        raise FileFormatError(f"{path}: class ids must be whole numbers; {CLASS_INFO_EXPECTS}")
    if ids.shape[0] != n:
        raise FileFormatError(
            f"{path}: {ids.shape[0]} class ids, the split's filenames.pickle has {n}"
        )
    return [int(c) for c in ids]


def _read_table(path: Path, columns: int, expects: str) -> list[tuple[int, list[str]]]:
    """(line number, fields) of the non-blank lines of a whitespace-separated table."""
    require_file(path, expects)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise FileFormatError(
            f"{path}: not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset {exc.start}); "
            f"{expects}"
        ) from None
    rows = []
    for n, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != columns:
            raise ValueError(f"{path}:{n}: expected {columns} fields, got {line!r}; {expects}")
        rows.append((n, fields))
    return rows


def read_cub_bboxes(cub_dir: Path) -> dict[str, BBox]:
    """Key → (x, y, width, height) from CUB's images.txt and bounding_boxes.txt (joined by id)."""
    images = _read_table(
        cub_dir / "images.txt", 2, "images.txt lists '<id> <class>/<name>.jpg' per line"
    )
    boxes_path = cub_dir / "bounding_boxes.txt"
    boxes = _read_table(boxes_path, 5, "bounding_boxes.txt lists '<id> <x> <y> <w> <h>' per line")
    by_id: dict[str, BBox] = {}
    for n, (img_id, *xywh) in boxes:
        try:
            by_id[img_id] = tuple(int(float(v)) for v in xywh)
        except ValueError as exc:
            raise ValueError(f"{boxes_path}:{n}: {exc}") from exc
    out = {}
    for _, (img_id, name) in images:
        if img_id not in by_id:
            raise ValueError(f"{boxes_path}: no bounding box for image id {img_id} ({name})")
        out[name.rsplit(".", 1)[0]] = by_id[img_id]
    return out


def load_or_build_captions(root: Path, layout: Layout, captions_per_image: int) -> CaptionSets:
    """``<root>/captions.pickle``; built from ``<root>/text/<key>.txt`` (both splits) if missing."""
    path = root / "captions.pickle"
    if path.is_file():
        return load_captions_pickle(path)
    tokens: dict[str, list[list[str]]] = {}
    for split in SPLITS:
        tokens[split] = []
        for key in load_filenames(root, split, layout):
            text = root / "text" / f"{key}.txt"
            caps = read_caption_file(text, captions_per_image, expects=layout.description)
            if len(caps) < captions_per_image:
                raise ValueError(
                    f"{text}: {len(caps)} captions, the {layout.name} layout expects "
                    f"{captions_per_image} per image"
                )
            tokens[split].extend(caps)
    sets = build_caption_sets(tokens["train"], tokens["test"])
    save_captions_pickle(path, sets)
    return sets


def load_text_image_dataset(
    root: str | Path,
    split: str = "train",
    layout: str = "cub",
    *,
    base_size: int = 64,
    branch_num: int = 3,
    words_num: int | None = None,
    captions_per_image: int | None = None,
    augment: bool = True,
    flip: bool = True,
) -> CaptionedImageDataset:
    """A split of a CUB- or COCO-layout dataset (see the module docstring for the files).

    Args:
        root: the ``birds`` or ``coco`` folder.
        split: ``'train'`` or ``'test'``.
        layout: ``'cub'`` (bounding-box crop, class_info) or ``'coco'``.
        base_size, branch_num: branch image sizes ``base_size · 2^i`` (64/128/256 by default).
        words_num: caption length T (default 18 for CUB, 12 for COCO).
        captions_per_image: default 10 for CUB, 5 for COCO.
        augment: random crop and flip (the original uses them for both splits).
        flip: False leaves out the flip of ``augment`` (see ``BranchImages``).

    Raises:
        FileNotFoundError: a file or folder of the layout is missing (the message names it).
        ValueError: a malformed file or an empty caption (the message names the file and line).
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {sorted(LAYOUTS)}, got {layout!r}")
    if split not in SPLITS:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    lay = LAYOUTS[layout]
    root = require_dir(Path(root), lay.description)
    cpi = captions_per_image or lay.captions_per_image
    keys = load_filenames(root, split, lay)
    sets = load_or_build_captions(root, lay, cpi)
    bboxes = None
    if lay.has_bbox:
        table = read_cub_bboxes(root / "CUB_200_2011")
        missing = [k for k in keys if k not in table]
        if missing:
            raise ValueError(
                f"{root / 'CUB_200_2011' / 'images.txt'}: {missing[0]!r} of "
                f"{root / split / 'filenames.pickle'} is not listed ({len(missing)} missing)"
            )
        bboxes = [table[k] for k in keys]
    image_dir = root / lay.image_dir
    return CaptionedImageDataset(
        image_paths=[image_dir / f"{k}.jpg" for k in keys],
        keys=keys,
        captions=sets.split(split),
        captions_per_image=cpi,
        vocab=sets.vocab,
        class_ids=load_class_ids(root / split / "class_info.pickle", len(keys)),
        bboxes=bboxes,
        words_num=words_num or lay.words_num,
        images=BranchImages(base_size, branch_num, augment, flip),
        source=f"{root / 'captions.pickle'} ({lay.description})",
    )
