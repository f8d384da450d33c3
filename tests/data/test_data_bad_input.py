"""Bad input: every error names the path (or file:line) and what the layout expects."""

from __future__ import annotations

import pickle
import re
import shutil

import pytest
from data_fakes import write_image

from attngan_fast.data.captions import build_caption_sets, save_captions_pickle
from attngan_fast.data.folder import load_folder_dataset
from attngan_fast.data.text_image import load_text_image_dataset


def _raises(exc, path, *also):
    return pytest.raises(exc, match=re.escape(str(path)) + ".*" + ".*".join(also))


def test_missing_root_and_layout_files(cub_tree, tmp_path):
    with _raises(FileNotFoundError, tmp_path / "nowhere", "not found", "CUB layout expects"):
        load_text_image_dataset(tmp_path / "nowhere", "train", "cub")
    path = cub_tree / "test" / "filenames.pickle"
    path.unlink()
    with _raises(FileNotFoundError, path, "filenames.pickle"):  # needed to build captions
        load_text_image_dataset(cub_tree, "train", "cub")
    with _raises(FileNotFoundError, path, "CUB layout expects"):
        load_text_image_dataset(cub_tree, "test", "cub")


def test_missing_images_txt_and_bad_bbox_line(cub_tree):
    load_text_image_dataset(cub_tree, "train", "cub")
    boxes = cub_tree / "CUB_200_2011" / "bounding_boxes.txt"
    boxes.write_text("1 5.0 4.0 20.0 16.0\n2 5.0 4.0 20.0\n")
    with pytest.raises(ValueError, match=re.escape(f"{boxes}:2: expected 5 fields")):
        load_text_image_dataset(cub_tree, "train", "cub")
    boxes.write_text("1 5.0 4.0 20.0 16.0\n\n2 5.0 4.0 twenty 16.0\n")
    with pytest.raises(ValueError, match=re.escape(f"{boxes}:3: could not convert")):
        load_text_image_dataset(cub_tree, "train", "cub")
    images_txt = cub_tree / "CUB_200_2011" / "images.txt"
    images_txt.unlink()
    with _raises(FileNotFoundError, images_txt, "not found", "<id> <class>/<name>.jpg"):
        load_text_image_dataset(cub_tree, "train", "cub")


def test_missing_caption_file_image_and_folder(cub_tree):
    text = cub_tree / "text" / "002.Blue_Bird" / "Blue_0003.txt"
    text.unlink()
    with _raises(FileNotFoundError, text, "not found", r"text/<class>/<name>.txt"):
        load_text_image_dataset(cub_tree, "train", "cub")
    text.write_text("one red bird\n" * 10)
    image = cub_tree / "CUB_200_2011" / "images" / "001.Red_Bird" / "Red_Bird_0002.jpg"
    image.unlink()
    with _raises(FileNotFoundError, image, "image not found", "1 of 3 missing"):
        load_text_image_dataset(cub_tree, "train", "cub")
    shutil.rmtree(cub_tree / "CUB_200_2011" / "images")
    with _raises(FileNotFoundError, image.parent.parent.parent, "3 of 3 missing"):
        load_text_image_dataset(cub_tree, "train", "cub")


def test_too_few_and_empty_captions_name_file_and_line(cub_tree):
    text = cub_tree / "text" / "001.Red_Bird" / "Red_Bird_0001.txt"
    text.write_text("a red bird\n" * 8)
    with pytest.raises(ValueError, match=re.escape(f"{text}: 8 captions") + ".*expects 10"):
        load_text_image_dataset(cub_tree, "train", "cub")
    text.write_text("a red bird\n" * 3 + "¿¡ ... !!\n" + "a red bird\n" * 6)
    with pytest.raises(ValueError, match=re.escape(f"{text}:4: caption") + ".*no ASCII word"):
        load_text_image_dataset(cub_tree, "train", "cub")
    assert not (cub_tree / "captions.pickle").exists()  # nothing half-built was cached


def test_empty_caption_in_pickle_and_stale_pickle(cub_tree):
    sets = build_caption_sets([["a", "bird"]] * 30, [["a", "bird"]] * 10)
    sets.train[12] = []
    save_captions_pickle(cub_tree / "captions.pickle", sets)
    with pytest.raises(ValueError, match="caption 2 of '001.Red_Bird/Red_Bird_0002' is empty"):
        load_text_image_dataset(cub_tree, "train", "cub")
    save_captions_pickle(cub_tree / "captions.pickle", build_caption_sets([["a"]] * 20, []))
    with _raises(ValueError, cub_tree / "captions.pickle", "20 captions for 3 images", "rebuild"):
        load_text_image_dataset(cub_tree, "train", "cub")


def test_unreadable_image_is_skipped_with_a_counting_warning(cub_tree):
    bad = cub_tree / "CUB_200_2011" / "images" / "001.Red_Bird" / "Red_Bird_0002.jpg"
    bad.write_bytes(b"\xff\xd8 this is not a jpeg")
    ds = load_text_image_dataset(cub_tree, "train", "cub", base_size=8, branch_num=2)
    assert ds[0].key == "001.Red_Bird/Red_Bird_0001"
    with pytest.warns(RuntimeWarning, match=re.escape(f"skipped unreadable image {bad}") + ".*1 "):
        sample = ds[1]
    assert sample.key == "002.Blue_Bird/Blue_0003"  # the next one instead
    assert ds.skipped == {bad}
    for path in ds.image_paths:
        path.write_bytes(b"garbage")
    with pytest.warns(RuntimeWarning) as caught, pytest.raises(RuntimeError, match="no readable"):
        ds[0]
    assert "3 unreadable image(s)" in str(caught[-1].message)


def test_unknown_layout_and_split(cub_tree):
    with pytest.raises(ValueError, match="layout must be one of"):
        load_text_image_dataset(cub_tree, "train", "flowers")
    with pytest.raises(ValueError, match="split must be"):
        load_text_image_dataset(cub_tree, "val", "cub")


def test_folder_errors(tmp_path):
    root = tmp_path / "mine"
    root.mkdir()
    with _raises(FileNotFoundError, root / "images", "not found", r"<name>.txt"):
        load_folder_dataset(root)
    write_image(root / "images" / "a.jpg")
    write_image(root / "images" / "b.png")
    (root / "images" / "a.txt").write_text("a red bird\n")
    with _raises(FileNotFoundError, root / "images" / "b.txt", "not found", "folder layout"):
        load_folder_dataset(root, test_ratio=0.0)
    (root / "images" / "b.txt").write_text("\n\n")
    with _raises(ValueError, root / "images" / "b.txt", "no caption"):
        load_folder_dataset(root, test_ratio=0.0)
    (root / "images" / "b.txt").write_text("a blue bird\n???\n")
    with pytest.raises(ValueError, match=re.escape(f"{root / 'images' / 'b.txt'}:2: caption")):
        load_folder_dataset(root, test_ratio=0.0)
    write_image(root / "images" / "a.png")
    with pytest.raises(ValueError, match="two images named 'a'"):
        load_folder_dataset(root, test_ratio=0.0)
    (root / "images" / "a.png").unlink()
    (root / "images" / "b.txt").write_text("a blue bird\n")
    with pytest.raises(ValueError, match="split has no images"):
        load_folder_dataset(root, "test", test_ratio=0.0)
    with pytest.raises(ValueError, match="test_ratio"):
        load_folder_dataset(root, test_ratio=1.0)
    assert pickle.loads((root / "train" / "filenames.pickle").read_bytes()) == ["a", "b"]
