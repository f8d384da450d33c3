"""SynthBirds: determinism, the CUB layout, captions true to the drawn colours
(its speed: benchmarks/test_bench_synth_birds.py)."""

from __future__ import annotations

import json
import pickle
from collections import Counter

import pytest
from PIL import Image

from attngan_fast.data.synth_birds import (
    BEAK_LENGTHS,
    CAPTIONS_PER_IMAGE,
    COLOURS,
    MANIFEST_FILE,
    PALETTE,
    PARTS,
    SIZE_WORDS,
    class_id,
    load_synth_attributes,
    make_synth_birds,
)
from attngan_fast.data.vocab import tokenize
from attngan_fast.errors import FileFormatError, OutputExistsError, UsageError

PART_WORDS = {
    "crown": {"crown"},
    "body": {"body", "bird"},
    "belly": {"belly", "breast"},
    "wing": {"wings", "wing"},
    "tail": {"tail"},
    "beak": {"beak", "bill"},
}


def _files(root):
    files = sorted(p for p in root.rglob("*") if p.is_file())
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in files}


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    a = _files(make_synth_birds(tmp_path / "a", 6, 2, seed=7, image_size=96))
    b = _files(make_synth_birds(tmp_path / "b", 6, 2, seed=7, image_size=96))
    c = _files(make_synth_birds(tmp_path / "c", 6, 2, seed=8, image_size=96))
    assert a == b
    assert a.keys() != c.keys() or any(a[k] != c[k] for k in a)
    texts_a = sorted(v for k, v in a.items() if k.startswith("text/"))
    texts_c = sorted(v for k, v in c.items() if k.startswith("text/"))
    assert texts_a != texts_c


def test_layout_is_written_like_cub(synth_root):
    cub = synth_root / "CUB_200_2011"
    images = [line.split() for line in (cub / "images.txt").read_text().splitlines()]
    boxes = [line.split() for line in (cub / "bounding_boxes.txt").read_text().splitlines()]
    assert len(images) == len(boxes) == 32
    assert [i for i, _ in images] == [b[0] for b in boxes] == [str(n) for n in range(1, 33)]
    train = pickle.loads((synth_root / "train" / "filenames.pickle").read_bytes())
    test = pickle.loads((synth_root / "test" / "filenames.pickle").read_bytes())
    assert len(train) == 24 and len(test) == 8
    assert [name for _, name in images] == [f"{k}.jpg" for k in train + test]
    attrs = load_synth_attributes(synth_root)
    for split, keys in (("train", train), ("test", test)):
        classes = pickle.loads((synth_root / split / "class_info.pickle").read_bytes())
        assert classes == [attrs[k]["class_id"] for k in keys]
        assert all(k.startswith(f"{c:04d}.") for k, c in zip(keys, classes))
    train_classes = {attrs[k]["class_id"] for k in train}
    assert train_classes.isdisjoint({attrs[k]["class_id"] for k in test})  # as in CUB
    for (_, name), (_, *box) in zip(images, boxes):
        key = name[:-4]
        with Image.open(cub / "images" / name) as im:
            assert im.size == (128, 128) and im.mode == "RGB"
        x, y, w, h = map(float, box)
        assert [x, y, w, h] == attrs[key]["bbox"]
        assert 0 <= x and 0 <= y and w > 10 and h > 10 and x + w <= 128 and y + h <= 128
        lines = (synth_root / "text" / f"{key}.txt").read_text().splitlines()
        assert len(lines) == CAPTIONS_PER_IMAGE == len(set(lines))


def test_captions_name_exactly_the_drawn_colours(synth_root):
    attrs = load_synth_attributes(synth_root)
    for key, a in attrs.items():
        assert a["class_id"] == class_id(a["body"], a["wing"], a["crown"])
        lines = (synth_root / "text" / f"{key}.txt").read_text().splitlines()
        assert len(a["mentions"]) == len(lines)
        named = set()
        for line, parts in zip(lines, a["mentions"]):
            tokens = tokenize(line)
            colours = [t for t in tokens if t in PALETTE]
            assert Counter(colours) == Counter(a[p] for p in parts), (key, line)
            for p in parts:
                assert PART_WORDS[p] & set(tokens), (key, line, p)
            sizes = {t for t in tokens if any(t in w for w in SIZE_WORDS.values())}
            assert sizes <= set(SIZE_WORDS[a["size"]]), (key, line)
            assert {t for t in tokens if t in BEAK_LENGTHS} <= {a["beak_length"]}, (key, line)
            named.update(parts)
        assert named == set(PARTS), key  # every part's colour is named by some caption


def test_drawn_colours_are_where_the_labels_say(synth_root):
    """Crown and belly pixels of flying birds (located from the bbox) have the labelled colour."""
    attrs = load_synth_attributes(synth_root)
    checked = 0
    for key, a in attrs.items():
        if a["pose"] != "flying":
            continue
        img = Image.open(synth_root / "CUB_200_2011" / "images" / f"{key}.jpg").convert("RGB")
        x, y, w, h = a["bbox"]
        # A flying bird spans x in [-1.8, 1.3 + beak] and y from -1.7 (units of its half-length).
        scale = w / (3.1 + (0.65 if a["beak_length"] == "long" else 0.3))
        for part, (px, py) in (("crown", (0.95, -0.8)), ("belly", (0.15, 0.2))):
            dx = (px + 1.8) * scale
            u = x + dx if a["facing"] == "right" else x + w - dx
            pixel = img.getpixel((int(u), int(y + (py + 1.7) * scale)))
            nearest = min(
                PALETTE, key=lambda c: sum((p - q) ** 2 for p, q in zip(pixel, COLOURS[c]))
            )
            assert nearest == a[part], (key, part, pixel)
        checked += 1
    assert checked > 0


def test_refuses_to_overwrite_unless_asked(tmp_path):
    root = make_synth_birds(tmp_path / "b", 2, 1, seed=0, image_size=64)
    (root / "captions.pickle").write_bytes(b"stale")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        make_synth_birds(root, 2, 1, seed=1, image_size=64)
    make_synth_birds(root, 2, 1, seed=1, image_size=64, overwrite=True)
    assert not (root / "captions.pickle").exists()


def test_overwrite_deletes_only_what_it_wrote(tmp_path):
    root = make_synth_birds(tmp_path / "b", 3, 1, seed=0, image_size=32)
    assert MANIFEST_FILE in _files(root)
    notes = next((root / "text").iterdir()) / "my_notes.txt"
    notes.write_text("mine")
    (root / "CUB_200_2011" / "README").write_text("mine too")
    make_synth_birds(root, 2, 1, seed=5, image_size=32, overwrite=True)
    assert notes.read_text() == "mine" and (root / "CUB_200_2011" / "README").is_file()
    after = _files(root)
    del after[notes.relative_to(root).as_posix()], after["CUB_200_2011/README"]
    assert after == _files(make_synth_birds(tmp_path / "fresh", 2, 1, seed=5, image_size=32))


def test_overwrite_refuses_a_folder_it_did_not_make(tmp_path):
    """A real CUB folder (no manifest): nothing is deleted, even with overwrite."""
    root = tmp_path / "birds"
    for rel in ("CUB_200_2011/images/001.A/a.jpg", "text/001.A/my_notes.txt", "notes.txt"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text("the user's")
    before = _files(root)
    with pytest.raises(OutputExistsError, match="no synthbirds_manifest.json.*nothing there is"):
        make_synth_birds(root, 2, 1, image_size=32, overwrite=True)
    assert _files(root) == before


def test_tampered_manifest_deletes_nothing(tmp_path):
    root = make_synth_birds(tmp_path / "b", 2, 1, image_size=32)
    victim = tmp_path / "victim.txt"
    victim.write_text("outside the dataset")
    manifest = json.loads((root / MANIFEST_FILE).read_text())
    manifest["files"].append("../victim.txt")
    (root / MANIFEST_FILE).write_text(json.dumps(manifest))
    before = _files(root)
    with pytest.raises(FileFormatError, match="victim.txt.*nothing was deleted"):
        make_synth_birds(root, 2, 1, image_size=32, overwrite=True)
    assert victim.is_file() and _files(root) == before


def test_interrupted_generation_can_be_overwritten(tmp_path, monkeypatch):
    """The manifest is written first: a run killed half-way leaves nothing it cannot clean."""
    from attngan_fast.data import synth_birds

    real_draw, drawn = synth_birds.draw_bird, []

    def dying_draw(*args):
        if len(drawn) == 2:
            raise KeyboardInterrupt
        drawn.append(1)
        return real_draw(*args)

    monkeypatch.setattr(synth_birds, "draw_bird", dying_draw)
    with pytest.raises(KeyboardInterrupt):
        make_synth_birds(tmp_path / "b", 4, 1, image_size=32)
    monkeypatch.undo()
    root = make_synth_birds(tmp_path / "b", 4, 1, image_size=32, overwrite=True)
    assert _files(root) == _files(make_synth_birds(tmp_path / "fresh", 4, 1, image_size=32))


def test_sizes_are_bounded(tmp_path):
    with pytest.raises(UsageError, match=r"image_size must be in \[32, 1024\], got 4096"):
        make_synth_birds(tmp_path / "b", 1, 1, image_size=4096)
    with pytest.raises(UsageError, match="n_train"):
        make_synth_birds(tmp_path / "b", 0, 1)
    assert not (tmp_path / "b").exists()


def test_simple_variety_keeps_the_colours_and_fixes_the_rest(tmp_path):
    from attngan_fast.data.synth_birds import SIMPLE

    full = load_synth_attributes(make_synth_birds(tmp_path / "full", 12, 4, seed=3, image_size=64))
    simple = load_synth_attributes(
        make_synth_birds(tmp_path / "simple", 12, 4, seed=3, image_size=64, variety=SIMPLE)
    )
    full_images, simple_images = full, simple
    assert len(simple_images) == 16
    for a in simple_images.values():
        assert (a["size"], a["pose"], a["facing"], a["background"]) == (
            "large", "perched", "right", "plain"
        )  # fmt: skip
    colours = lambda images: sorted(tuple(a[p] for p in PARTS) for a in images.values())  # noqa: E731
    assert colours(simple_images) == colours(full_images)


def test_variety_values_are_checked():
    from attngan_fast.data.synth_birds import Variety

    with pytest.raises(UsageError, match="poses must be a non-empty subset"):
        Variety(poses=("swimming",))
    with pytest.raises(UsageError, match="backgrounds must be a non-empty subset"):
        Variety(backgrounds=())
