"""Dataset pickles come from the web: only data gets through, never code; damaged files are one
clear error naming the file (FileFormatError), whatever the damage."""

from __future__ import annotations

import os
import pickle
import re
import shutil

import numpy as np
import pytest
from data_fakes import py2_pickle
from fuzz import mutations

from attngan_fast.data._io import load_pickle
from attngan_fast.data.captions import load_captions_pickle
from attngan_fast.data.text_image import (
    LAYOUTS,
    load_class_ids,
    load_filenames,
    load_text_image_dataset,
)
from attngan_fast.errors import FileFormatError

CUB = LAYOUTS["cub"]


class _Exploit:
    """Unpickling it runs ``touch <marker>`` (what a malicious dataset pickle would do)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _Builtin:
    """A pickle that calls builtins.eval: refused by name, like any global."""

    def __reduce__(self):
        return (eval, ("1 + 1",))


def _refused(path):
    return pytest.raises(FileFormatError, match=re.escape(str(path)) + ".*refused to load")


@pytest.mark.parametrize("protocol", [2, 4])
def test_exploit_pickles_run_nothing(cub_tree, tmp_path, protocol):
    """captions.pickle, filenames.pickle and class_info.pickle: refused before any code runs."""
    marker = tmp_path / "pwned"
    payload = [_Exploit(marker)]
    for path, load in (
        (cub_tree / "captions.pickle", load_captions_pickle),
        (cub_tree / "train" / "filenames.pickle", lambda p: load_filenames(cub_tree, "train", CUB)),
        (cub_tree / "train" / "class_info.pickle", lambda p: load_class_ids(p, 2)),
    ):
        path.write_bytes(pickle.dumps(payload, protocol=protocol))
        with _refused(path):
            load(path)
        assert not marker.exists(), path
    path = tmp_path / "eval.pickle"
    path.write_bytes(pickle.dumps([_Builtin()], protocol=protocol))
    with pytest.raises(FileFormatError, match="refers to (builtins|__builtin__).eval"):
        load_pickle(path, "x")


def test_numpy_arrays_of_objects_are_refused(tmp_path):
    path = tmp_path / "class_info.pickle"
    path.write_bytes(pickle.dumps(np.array([1, "a"], dtype=object), protocol=2))
    with _refused(path):
        load_class_ids(path, 2)
    path.write_bytes(pickle.dumps(np.zeros(2, dtype=[("a", "i4"), ("b", "f4")]), protocol=2))
    with _refused(path):
        load_class_ids(path, 2)
    path.write_bytes(pickle.dumps(np.ma.masked_array([1, 2]), protocol=2))
    with _refused(path):
        load_class_ids(path, 2)


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_numpy_arrays_of_plain_dtypes_load(tmp_path, protocol):
    path = tmp_path / "class_info.pickle"
    path.write_bytes(pickle.dumps(np.array([3, 1, 200], dtype=np.int64), protocol=protocol))
    assert load_class_ids(path, 3) == [3, 1, 200]
    path.write_bytes(pickle.dumps([np.int32(4), np.float64(2.0)], protocol=protocol))
    assert load_class_ids(path, 2) == [4, 2]


def test_python2_pickles_with_numpy_arrays(cub_tree):
    """The original CUB files: Python 2 pickles (str as BINSTRING, numpy 1.x array globals)."""
    info = cub_tree / "train" / "class_info.pickle"
    info.write_bytes(py2_pickle(np.array([1, 1, 2], dtype="<i8")))
    assert load_class_ids(info, 3) == [1, 1, 2]
    info.write_bytes(py2_pickle(np.array([[1], [1], [2]], dtype="<i4")))  # a column: raveled
    assert load_class_ids(info, 3) == [1, 1, 2]
    names = cub_tree / "train" / "filenames.pickle"
    names.write_bytes(py2_pickle([b"001.Caf\xe9/a", b"002.B/b"]))  # latin-1 bytes of Python 2
    assert load_filenames(cub_tree, "train", CUB) == ["001.Café/a", "002.B/b"]


def test_wrong_content_is_named(cub_tree):
    info = cub_tree / "train" / "class_info.pickle"
    for bad in ({"a": 1}, [1.5, 2, 3], [[1, 2], [3]], ["a", "b", "c"], [float("nan")] * 3):
        info.write_bytes(pickle.dumps(bad, protocol=2))
        with pytest.raises(FileFormatError, match=re.escape(str(info))):
            load_class_ids(info, 3)
    names = cub_tree / "train" / "filenames.pickle"
    for bad in (7, [1, 2], {"a": "b"}):
        names.write_bytes(pickle.dumps(bad, protocol=2))
        with pytest.raises(FileFormatError, match=re.escape(str(names)) + ".*file names"):
            load_filenames(cub_tree, "train", CUB)
    captions = cub_tree / "captions.pickle"
    vocab = {0: "<end>", 1: "a"}
    captions.write_bytes(pickle.dumps([[[1, 5]], [], vocab, {"<end>": 0, "a": 1}], protocol=2))
    with pytest.raises(FileFormatError, match=re.escape(str(captions)) + ".*outside the vocab"):
        load_captions_pickle(captions)


def test_loader_fuzz(cub_tree, tmp_path):
    """A few hundred damaged pickles per loader: each loads, or raises one FileFormatError naming
    the file (never MemoryError, OverflowError, TypeError ... from inside)."""
    load_text_image_dataset(cub_tree, "train", "cub")  # writes captions.pickle
    loaders = {
        "captions.pickle": load_captions_pickle,
        "train/filenames.pickle": lambda p: load_filenames(p.parent.parent, "train", CUB),
        "train/class_info.pickle": lambda p: load_class_ids(p, 3),
    }
    outcomes = {"loaded": 0, "refused": 0}
    for rel, load in loaders.items():
        good = (cub_tree / rel).read_bytes()
        root = tmp_path / "fuzz"
        shutil.rmtree(root, ignore_errors=True)
        path = root / rel
        path.parent.mkdir(parents=True)
        for data in mutations(good, 150, seed=17):
            path.write_bytes(data)
            try:
                load(path)
                outcomes["loaded"] += 1
            except FileFormatError as exc:
                assert str(path) in str(exc) and "\n" not in str(exc)
                outcomes["refused"] += 1
    assert outcomes["refused"] > 200 and outcomes["loaded"] > 0
