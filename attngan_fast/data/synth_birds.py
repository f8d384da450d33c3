"""SynthBirds: a procedural, offline stand-in for CUB birds, written in the CUB layout.

Each image is a stylised bird drawn with PIL: body, belly, wings, crown, beak, tail, eye (and legs
on a branch when perched), every coloured part in a named colour of :data:`COLOURS`, on a plain,
sky or foliage background. Each image has :data:`CAPTIONS_PER_IMAGE` CUB-style captions from
varied templates; a colour word in a caption is always the colour drawn on the part it names.

A class ("species") is a (body, wing, crown) colour triple, id ``1 + 100·body + 10·wing + crown``
(indices into :data:`PALETTE`); belly, tail, beak, size, pose and background vary within a class.
As in CUB, train and test species are disjoint by default. Everything follows from ``seed``.

Files (``<root>`` plays the part of CUB's ``birds`` folder, so the CUB loader reads it unchanged)::

    CUB_200_2011/images.txt, bounding_boxes.txt (the bird's true box), images/<class>/<name>.jpg
    text/<class>/<name>.txt                      10 captions
    {train,test}/filenames.pickle, {train,test}/class_info.pickle
    attributes.json                              ground-truth labels of every image
    synthbirds_manifest.json                     every file above (what overwrite may delete)

``attributes.json`` holds, per key: the colour of each part in :data:`PARTS`, ``beak_length``,
``size``, ``pose``, ``facing``, ``background``, ``bbox`` [x, y, w, h], ``split``, ``class_id`` and
``mentions``: for each caption line, the parts whose colour it names.

The manifest is written before any other file. ``overwrite=True`` deletes only the files it lists
(and ``captions.pickle``, the loaders' cache of these captions), then the folders left empty; a
folder holding dataset files but no manifest is refused (it was not made here).
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from attngan_fast.data._io import dump_pickle, read_json
from attngan_fast.errors import FileFormatError, OutputExistsError, UsageError

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (205, 35, 35),
    "blue": (40, 85, 205),
    "yellow": (240, 210, 45),
    "green": (45, 155, 60),
    "black": (25, 25, 25),
    "white": (245, 245, 245),
    "brown": (120, 75, 35),
    "orange": (240, 130, 25),
    "grey": (135, 135, 135),
    "purple": (130, 50, 170),
}
PALETTE: tuple[str, ...] = tuple(COLOURS)
PARTS: tuple[str, ...] = ("crown", "body", "belly", "wing", "tail", "beak")
BEAK_COLOURS: tuple[str, ...] = ("black", "grey", "yellow", "orange", "red", "brown")
BEAK_LENGTHS: tuple[str, ...] = ("short", "long")
SIZES: tuple[str, ...] = ("small", "large")
POSES: tuple[str, ...] = ("perched", "flying")
FACINGS: tuple[str, ...] = ("left", "right")
BACKGROUNDS: tuple[str, ...] = ("plain", "sky", "foliage")
CAPTIONS_PER_IMAGE = 10
ATTRIBUTES_FILE = "attributes.json"
MANIFEST_FILE = "synthbirds_manifest.json"
MAX_IMAGES = 100_000  # per split
MIN_SIZE, MAX_SIZE = 32, 1024  # image side in pixels

# Words a caption may use for a size; every other word of the templates is not an attribute value.
SIZE_WORDS: dict[str, tuple[str, ...]] = {"small": ("small", "tiny"), "large": ("large", "big")}

# ---------------------------------------------------------------------------------------------
# Captions

_PART_PHRASES: dict[str, tuple[str, ...]] = {
    "crown": ("a {c} crown", "a crown that is {c}", "a {c} crown on its head"),
    "body": ("a {c} body", "a body that is {c}", "a mostly {c} body"),
    "belly": ("a {c} belly", "a {c} breast", "a belly that is {c}"),
    "wing": ("{c} wings", "wings that are {c}", "{c} wing feathers"),
    "tail": ("a {c} tail", "{c} tail feathers", "a tail that is {c}"),
    "beak": ("a {len} {c} beak", "a {c} bill", "a {len} beak that is {c}", "a {c} {len} bill"),
}
# (template, whether it names the body colour); {parts} is the list of part phrases.
_OPENERS: tuple[tuple[str, bool], ...] = (
    ("this bird has {parts}", False),
    ("the bird has {parts}", False),
    ("a {size} bird with {parts}", False),
    ("this {size} bird has {parts}", False),
    ("this is a {size} bird with {parts}", False),
    ("a {pose} {size} bird with {parts}", False),
    ("this bird is {pose_phrase} and has {parts}", False),
    ("a {body} bird with {parts}", True),
    ("this {size} {body} bird has {parts}", True),
    ("this bird is mostly {body} with {parts}", True),
)
_POSE_PHRASES = {
    "perched": ("perched on a branch", "sitting on a branch"),
    "flying": ("flying", "in flight"),
}
_BACKGROUND_PHRASES = {
    "plain": "on a plain background",
    "sky": "against the sky",
    "foliage": "among the leaves",
}


def _join(phrases: Sequence[str]) -> str:
    return phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]


def make_caption(
    attrs: dict[str, str], rng: random.Random, must: str | None = None
) -> tuple[str, list[str]]:
    """One caption of a bird with attributes ``attrs``; returns (text, parts whose colour it names).

    ``must`` is a part the caption has to name.
    """
    opener, names_body = rng.choice(_OPENERS)
    if names_body and must == "body":
        must = None
    pool = [p for p in PARTS if p != must and not (names_body and p == "body")]
    k = rng.choices((1, 2, 3, 4), weights=(15, 45, 30, 10))[0] - (must is not None)
    parts = ([must] if must else []) + rng.sample(pool, max(k, 0))
    rng.shuffle(parts)
    phrases = [
        rng.choice(_PART_PHRASES[p]).format(c=attrs[p], len=attrs["beak_length"]) for p in parts
    ]
    text = opener.format(
        parts=_join(phrases),
        size=rng.choice(SIZE_WORDS[attrs["size"]]),
        body=attrs["body"],
        pose=attrs["pose"],
        pose_phrase=rng.choice(_POSE_PHRASES[attrs["pose"]]),
    )
    if rng.random() < 0.15:
        text += " " + _BACKGROUND_PHRASES[attrs["background"]]
    return text, (["body"] if names_body else []) + parts


def make_captions(attrs: dict[str, str], rng: random.Random) -> tuple[list[str], list[list[str]]]:
    """:data:`CAPTIONS_PER_IMAGE` distinct captions (each part's colour named at least once)."""
    texts: list[str] = []
    mentions: list[list[str]] = []
    for _ in range(20 * CAPTIONS_PER_IMAGE):  # bounded; 10 distinct come within a few tries
        if len(texts) == CAPTIONS_PER_IMAGE:
            break
        unnamed = [p for p in PARTS if not any(p in m for m in mentions)]
        text, parts = make_caption(attrs, rng, unnamed[0] if unnamed else None)
        if text not in texts:
            texts.append(text)
            mentions.append(parts)
    order = list(range(len(texts)))
    rng.shuffle(order)
    return [texts[j] for j in order], [mentions[j] for j in order]


# ---------------------------------------------------------------------------------------------
# Drawing. Shapes are in units of the body's half-length, bird facing right, centre at (0, 0).

Point = tuple[float, float]


def _shade(rgb: Sequence[int], f: float) -> tuple[int, int, int]:
    return tuple(min(255, int(v * f)) for v in rgb)


def _jitter(rgb: Sequence[int], rng: random.Random, amount: int = 10) -> tuple[int, int, int]:
    return tuple(min(255, max(0, v + rng.randint(-amount, amount))) for v in rgb)


def _bird_shapes(a: dict[str, str], rgb: dict[str, tuple[int, int, int]]):
    """(kind, points, fill) in drawing order; kind is 'polygon', 'ellipse', 'chord' or 'line'."""
    flying = a["pose"] == "flying"
    beak = 0.65 if a["beak_length"] == "long" else 0.3
    shapes: list[tuple[str, list[Point], tuple[int, int, int]]] = []
    if flying:
        far_wing = [(0.1, -0.2), (-0.5, -0.25), (-0.2, -1.35), (0.25, -1.1)]
        shapes.append(("polygon", far_wing, _shade(rgb["wing"], 0.8)))
        tail = [(-0.8, -0.15), (-0.8, 0.15), (-1.8, 0.3), (-1.8, -0.3)]
    else:
        tail = [(-0.75, -0.05), (-0.8, 0.25), (-1.75, 0.75), (-1.85, 0.45)]
        legs = (60, 60, 60)
        shapes += [("line", [(0.05, 0.55), (0.0, 0.95)], legs)]
        shapes += [("line", [(0.3, 0.5), (0.3, 0.95)], legs)]
    shapes.append(("polygon", tail, rgb["tail"]))
    shapes.append(("ellipse", [(-1.0, -0.62), (1.0, 0.62)], rgb["body"]))
    shapes.append(("ellipse", [(-0.5, -0.16), (0.8, 0.56)], rgb["belly"]))
    if flying:
        wing = [(0.35, -0.25), (-0.45, -0.3), (-0.9, -1.7), (-0.2, -1.55), (0.5, -1.0)]
    else:
        wing = [(0.45, -0.35), (-0.15, -0.5), (-1.25, 0.05), (-0.35, 0.3), (0.3, 0.1)]
    shapes.append(("polygon", wing, rgb["wing"]))
    head = [(0.53, -0.92), (1.37, -0.08)]
    shapes.append(("ellipse", head, rgb["body"]))
    shapes.append(("chord", head, rgb["crown"]))
    shapes.append(("ellipse", [(0.96, -0.58), (1.18, -0.36)], (250, 250, 250)))
    shapes.append(("ellipse", [(1.02, -0.52), (1.12, -0.42)], (10, 10, 10)))
    shapes.append(("polygon", [(1.3, -0.62), (1.3, -0.36), (1.3 + beak, -0.45)], rgb["beak"]))
    return shapes


def _background(a: dict[str, str], size: int, rng: random.Random) -> Image.Image:
    if a["background"] == "plain":
        base = rng.choice(((228, 222, 208), (214, 218, 224), (232, 232, 226)))
        return Image.new("RGB", (size, size), _jitter(base, rng))
    if a["background"] == "sky":
        top, bottom = _jitter((105, 155, 225), rng, 15), _jitter((200, 225, 245), rng, 10)
    else:
        top, bottom = _jitter((40, 90, 40), rng, 15), _jitter((115, 165, 85), rng, 15)
    t = np.linspace(0.0, 1.0, size, dtype=np.float32)[:, None]
    column = np.asarray(top, np.float32) * (1 - t) + np.asarray(bottom, np.float32) * t
    column_img = Image.fromarray(column.astype(np.uint8)[:, None, :], "RGB")  # size×1
    img = column_img.resize((size, size), Image.Resampling.NEAREST)
    if a["background"] == "foliage":
        draw = ImageDraw.Draw(img)
        for _ in range(rng.randint(8, 16)):
            x, y, r = rng.uniform(0, size), rng.uniform(0, size), rng.uniform(0.03, 0.09) * size
            leaf = _jitter((60, 125 + rng.randint(-30, 30), 50), rng, 15)
            draw.ellipse((x - r, y - 0.6 * r, x + r, y + 0.6 * r), fill=leaf)
    return img


def draw_bird(
    attrs: dict[str, str], size: int, rng: random.Random
) -> tuple[Image.Image, list[float]]:
    """Draw a bird with ``attrs`` on a ``size``² canvas; returns (image, bbox [x, y, w, h])."""
    rgb = {p: _jitter(COLOURS[attrs[p]], rng) for p in PARTS}
    shapes = _bird_shapes(attrs, rgb)
    lo, hi = (0.22, 0.26) if attrs["size"] == "large" else (0.13, 0.16)
    scale = rng.uniform(lo, hi) * size
    flip = -1.0 if attrs["facing"] == "left" else 1.0
    xs = [flip * x * scale for _, pts, _ in shapes for x, _ in pts]
    ys = [y * scale for _, pts, _ in shapes for _, y in pts]
    margin = 0.03 * size
    ox = rng.uniform(margin - min(xs), max(margin - min(xs), size - margin - max(xs)))
    oy = rng.uniform(margin - min(ys), max(margin - min(ys), size - margin - max(ys)))

    img = _background(attrs, size, rng)
    draw = ImageDraw.Draw(img)
    line_w = max(1, round(size / 160))
    if attrs["pose"] == "perched":
        y = oy + 0.95 * scale + 0.06 * scale
        draw.line((0, y, size, y), fill=_jitter((95, 70, 45), rng), width=max(2, int(0.12 * scale)))
    for kind, pts, fill in shapes:
        xy = [(ox + flip * x * scale, oy + y * scale) for x, y in pts]
        if kind in ("ellipse", "chord"):
            (x0, y0), (x1, y1) = xy
            xy = [(min(x0, x1), y0), (max(x0, x1), y1)]
        outline = _shade(fill, 0.55)
        if kind == "polygon":
            draw.polygon(xy, fill=fill, outline=outline, width=line_w)
        elif kind == "ellipse":
            draw.ellipse(xy, fill=fill, outline=outline, width=line_w)
        elif kind == "chord":  # the top of the head, symmetric so facing does not change it
            draw.chord(xy, 195, 345, fill=fill, outline=outline, width=line_w)
        else:
            draw.line(xy, fill=fill, width=max(1, int(0.07 * scale)))
    x0, x1 = max(0.0, ox + min(xs)), min(float(size), ox + max(xs))
    y0, y1 = max(0.0, oy + min(ys)), min(float(size), oy + max(ys))
    return img, [round(x0, 1), round(y0, 1), round(x1 - x0, 1), round(y1 - y0, 1)]


# ---------------------------------------------------------------------------------------------
# Dataset


def class_id(body: str, wing: str, crown: str) -> int:
    """Class of a (body, wing, crown) colour triple: 1 + 100·body + 10·wing + crown (1 … 1000)."""
    return 1 + 100 * PALETTE.index(body) + 10 * PALETTE.index(wing) + PALETTE.index(crown)


def _species(seed: int, n_species: int, test_species: float) -> dict[str, list[tuple[str, ...]]]:
    n = len(PALETTE)
    if not 2 <= n_species <= n**3:
        raise ValueError(f"n_species must be in [2, {n**3}], got {n_species}")
    if not 0.0 <= test_species < 1.0:
        raise ValueError(f"test_species must be in [0, 1), got {test_species}")
    picked = random.Random(f"synthbirds-species:{seed}").sample(range(n**3), n_species)
    triples = [(PALETTE[i // (n * n)], PALETTE[i // n % n], PALETTE[i % n]) for i in picked]
    n_test = min(round(n_species * test_species), n_species - 1)
    return {"train": triples[n_test:], "test": triples[:n_test] or triples[n_test:]}


@dataclass(frozen=True)
class Variety:
    """What varies between birds besides their colours: each field lists the values drawn from.

    The default is the full variety; :data:`SIMPLE` (one large perched bird facing right on a
    plain background) is what a short training run can learn.
    """

    sizes: tuple[str, ...] = SIZES
    poses: tuple[str, ...] = POSES
    facings: tuple[str, ...] = FACINGS
    backgrounds: tuple[str, ...] = BACKGROUNDS

    def __post_init__(self) -> None:
        for name, allowed in (("sizes", SIZES), ("poses", POSES), ("facings", FACINGS),
                              ("backgrounds", BACKGROUNDS)):  # fmt: skip
            values = getattr(self, name)
            if not values or any(v not in allowed for v in values):
                raise UsageError(
                    f"SynthBirds {name} must be a non-empty subset of {', '.join(allowed)}, "
                    f"got {', '.join(values) or 'nothing'}"
                )


FULL = Variety()
SIMPLE = Variety(sizes=("large",), poses=("perched",), facings=("right",), backgrounds=("plain",))
VARIETIES = {"full": FULL, "simple": SIMPLE}


def sample_attributes(
    species: Sequence[tuple[str, ...]], rng: random.Random, variety: Variety = FULL
) -> dict[str, str]:
    """Attributes of one bird of a random species of ``species`` (body, wing, crown triples).

    Every attribute is drawn (even from a single value), so a variety changes the values only,
    never the random stream of the colours.
    """
    body, wing, crown = rng.choice(species)
    return {
        "crown": crown,
        "body": body,
        "belly": rng.choice(PALETTE),
        "wing": wing,
        "tail": wing if rng.random() < 0.5 else rng.choice(PALETTE),
        "beak": rng.choice(BEAK_COLOURS),
        "beak_length": rng.choice(BEAK_LENGTHS),
        "size": rng.choice(variety.sizes),
        "pose": rng.choice(variety.poses),
        "facing": rng.choice(variety.facings),
        "background": rng.choice(variety.backgrounds),
    }


_OUTPUTS = ("CUB_200_2011", "text", "train", "test", "captions.pickle", ATTRIBUTES_FILE)
_DERIVED = ("captions.pickle",)  # written later by the dataset loaders, from our captions


def make_synth_birds(
    root: str | Path,
    n_train: int = 2000,
    n_test: int = 500,
    seed: int = 0,
    image_size: int = 256,
    *,
    n_species: int = 200,
    test_species: float = 0.25,
    variety: Variety = FULL,
    jpeg_quality: int = 90,
    overwrite: bool = False,
) -> Path:
    """Generate SynthBirds in the CUB layout under ``root`` (see the module docstring).

    Args:
        root: output folder (the ``birds`` folder of a CUB config).
        n_train, n_test: number of images per split (at most MAX_IMAGES each).
        seed: everything (species, attributes, drawing, captions) follows from it.
        image_size: side of the square images in pixels, MIN_SIZE … MAX_SIZE.
        n_species: number of (body, wing, crown) classes used.
        test_species: fraction of the species kept for the test split (disjoint from train, as in
            CUB); 0 shares the train species.
        variety: sizes, poses, facings and backgrounds drawn from (default: all of them).
        jpeg_quality: JPEG quality of the images.
        overwrite: replace a SynthBirds made earlier in ``root``: only the files its manifest
            lists are deleted.

    Returns:
        ``root`` as a Path.

    Raises:
        UsageError: a size out of range.
        OutputExistsError: ``root`` holds a dataset and not ``overwrite``, or one without a
            manifest (not made here: nothing is deleted).
    """
    root = Path(root)
    if not (1 <= n_train <= MAX_IMAGES and 0 <= n_test <= MAX_IMAGES):
        raise UsageError(
            f"need 1 <= n_train <= {MAX_IMAGES} and 0 <= n_test <= {MAX_IMAGES}, got {n_train} "
            f"and {n_test}"
        )
    if not MIN_SIZE <= image_size <= MAX_SIZE:
        raise UsageError(f"image_size must be in [{MIN_SIZE}, {MAX_SIZE}], got {image_size}")
    _clear_previous(root, overwrite)
    species = _species(seed, n_species, test_species)
    keys = {
        split: [_key(sample_attributes(species[split], _rng(seed, split, i), variety), split, i)
                for i in range(count)]
        for split, count in (("train", n_train), ("test", n_test))
    }  # fmt: skip
    _write_manifest(root, keys)
    cub = root / "CUB_200_2011"
    index_lines, bbox_lines, records = [], [], {}
    for split, split_keys in keys.items():
        classes = []
        for i, key in enumerate(split_keys):
            rng = _rng(seed, split, i)  # the same stream as for the key: attributes, then drawing
            attrs = sample_attributes(species[split], rng, variety)
            img, bbox = draw_bird(attrs, image_size, rng)
            captions, mentions = make_captions(attrs, rng)
            cid = class_id(attrs["body"], attrs["wing"], attrs["crown"])
            (cub / "images" / key).parent.mkdir(parents=True, exist_ok=True)
            img.save(cub / "images" / f"{key}.jpg", quality=jpeg_quality)
            (root / "text" / key).parent.mkdir(parents=True, exist_ok=True)
            (root / "text" / f"{key}.txt").write_text("\n".join(captions) + "\n")
            n = len(index_lines) + 1
            index_lines.append(f"{n} {key}.jpg")
            bbox_lines.append(f"{n} " + " ".join(f"{v:.1f}" for v in bbox))
            records[key] = {**attrs, "bbox": bbox, "split": split, "class_id": cid}
            records[key]["mentions"] = mentions
            classes.append(cid)
        dump_pickle(root / split / "filenames.pickle", split_keys)
        dump_pickle(root / split / "class_info.pickle", classes)
    (cub / "images.txt").write_text("\n".join(index_lines) + "\n")
    (cub / "bounding_boxes.txt").write_text("\n".join(bbox_lines) + "\n")
    meta = {
        "seed": seed,
        "image_size": image_size,
        "palette": {name: list(rgb) for name, rgb in COLOURS.items()},
        "parts": list(PARTS),
        "images": records,
    }
    (root / ATTRIBUTES_FILE).write_text(json.dumps(meta, indent=None, sort_keys=False))
    return root


def _rng(seed: int, split: str, i: int) -> random.Random:
    return random.Random(f"synthbirds:{seed}:{split}:{i}")


def _key(attrs: dict[str, str], split: str, i: int) -> str:
    cid = class_id(attrs["body"], attrs["wing"], attrs["crown"])
    return f"{cid:04d}.{attrs['body']}_{attrs['wing']}_{attrs['crown']}/{split}_{i:06d}"


def _write_manifest(root: Path, keys: dict[str, list[str]]) -> None:
    """List every file ``make_synth_birds`` is about to write (before it writes any)."""
    files = ["CUB_200_2011/images.txt", "CUB_200_2011/bounding_boxes.txt", ATTRIBUTES_FILE]
    for split, split_keys in keys.items():
        files += [f"{split}/filenames.pickle", f"{split}/class_info.pickle"]
        files += [f"CUB_200_2011/images/{k}.jpg" for k in split_keys]
        files += [f"text/{k}.txt" for k in split_keys]
    root.mkdir(parents=True, exist_ok=True)
    manifest = {"written_by": "attngan_fast.data.synth_birds", "files": files}
    manifest["derived"] = list(_DERIVED)
    (root / MANIFEST_FILE).write_text(json.dumps(manifest) + "\n", encoding="utf-8")


def _listed_files(root: Path, manifest: Path) -> list[Path]:
    """The files a manifest lists, each checked to lie inside ``root`` (else FileFormatError)."""
    listed = read_json(manifest, f"{MANIFEST_FILE} lists the files synth-data wrote")
    entries = listed.get("files") if isinstance(listed, dict) else None
    entries = [*entries, *listed.get("derived", [])] if isinstance(entries, list) else None
    if entries is None or not all(isinstance(f, str) and f for f in entries):
        raise FileFormatError(f"{manifest}: not a synth-data manifest; nothing was deleted")
    inside = root.resolve()
    paths = [root.joinpath(*PurePosixPath(f).parts) for f in entries]
    for entry, path in zip(entries, paths, strict=True):
        relative = PurePosixPath(entry)
        if (
            relative.is_absolute()
            or ".." in relative.parts
            or not path.resolve().is_relative_to(inside)
        ):
            raise FileFormatError(
                f"{manifest}: lists {entry!r}, outside {root}; nothing was deleted"
            )
    return paths


def _clear_previous(root: Path, overwrite: bool) -> None:
    """Refuse, or (``overwrite``) delete, the dataset already in ``root``."""
    manifest = root / MANIFEST_FILE
    existing = [root / name for name in (*_OUTPUTS, MANIFEST_FILE) if (root / name).exists()]
    if not existing:
        return
    if not overwrite:
        raise OutputExistsError(
            f"{existing[0]} exists: {root} already holds a dataset; pass --overwrite "
            "(overwrite=True) to replace a SynthBirds made there, or choose another folder"
        )
    if not manifest.is_file():
        raise OutputExistsError(
            f"{root} holds {existing[0].name} but no {MANIFEST_FILE}: it was not made by "
            "synth-data (or by a version before the manifest), so nothing there is deleted; "
            "choose another folder, or empty this one yourself"
        )
    paths = _listed_files(root, manifest)
    for path in paths:
        if path.is_file() or path.is_symlink():
            path.unlink()
    for folder in sorted({p.parent for p in paths}, key=lambda f: len(f.parts), reverse=True):
        while folder != root and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
            folder = folder.parent
    manifest.unlink()


def load_synth_attributes(root: str | Path) -> dict[str, Any]:
    """The ``attributes.json`` of a SynthBirds folder: key → attribute record (see module doc)."""
    path = Path(root) / ATTRIBUTES_FILE
    expects = "SynthBirds writes it with make_synth_birds()"
    meta = read_json(path, expects)
    if not isinstance(meta, dict) or not isinstance(meta.get("images"), dict):
        raise FileFormatError(f"{path}: no 'images' records; {expects}")
    return meta["images"]
