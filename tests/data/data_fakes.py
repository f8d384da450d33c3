"""Builders of tiny fake dataset trees and Python-2-style pickles for the data tests."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
from PIL import Image


def write_image(path: Path, size: tuple[int, int] = (40, 30), colour=(200, 30, 30)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)
    return path


def write_pickle(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(obj, protocol=2))


def py2_pickle(obj) -> bytes:
    """Pickle ``obj`` as Python 2's cPickle (protocol 2) would; ``bytes`` stand for Python 2 str.

    Python 2 str is written with SHORT_BINSTRING/BINSTRING (which Python 3 can only decode with an
    ``encoding``), unicode with BINUNICODE; lists and dicts with MARK … APPENDS/SETITEMS; numpy
    arrays as numpy 1.x does (``numpy.core.multiarray._reconstruct``, raw data as a str).
    """
    out = bytearray(b"\x80\x02")

    def emit(o):
        if isinstance(o, int):
            if 0 <= o < 256:
                out.extend(b"K" + bytes([o]))
            elif 0 <= o < 65536:
                out.extend(b"M" + o.to_bytes(2, "little"))
            else:
                out.extend(b"J" + o.to_bytes(4, "little", signed=True))
        elif isinstance(o, bytes):
            if len(o) < 256:
                out.extend(b"U" + bytes([len(o)]) + o)
            else:
                out.extend(b"T" + len(o).to_bytes(4, "little") + o)
        elif isinstance(o, str):
            data = o.encode("utf-8")
            out.extend(b"X" + len(data).to_bytes(4, "little") + data)
        elif isinstance(o, list):
            out.extend(b"]")
            if o:
                out.extend(b"(")
                for item in o:
                    emit(item)
                out.extend(b"e")
        elif isinstance(o, np.ndarray):
            emit_array(o)
        elif isinstance(o, dict):
            out.extend(b"}")
            if o:
                out.extend(b"(")
                for k, v in o.items():
                    emit(k)
                    emit(v)
                out.extend(b"u")
        else:
            raise TypeError(type(o))

    def emit_array(a: np.ndarray) -> None:  # as numpy 1.x under Python 2 pickles an array
        out.extend(b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n")
        out.extend(b"K\x00\x85U\x01b\x87R(K\x01")  # _reconstruct(ndarray, (0,), 'b'); BUILD (1,
        out.extend(b"(")
        for n in a.shape:
            emit(n)
        out.extend(b"t")  # shape
        code = a.dtype.str[1:].encode()
        out.extend(b"cnumpy\ndtype\nU" + bytes([len(code)]) + code + b"K\x00K\x01\x87R")
        order = a.dtype.str[0].encode()
        out.extend(b"(K\x03U\x01" + order + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb")
        out.extend(b"\x89")  # not Fortran order
        emit(a.tobytes())
        out.extend(b"tb")

    emit(obj)
    out.extend(b".")
    return bytes(out)


CUB_CAPTIONS = [f"this bird number {i} has a red crown and blue wings" for i in range(10)]


def make_cub_tree(root: Path, train: list[str], test: list[str], py2: bool = False) -> Path:
    """A tiny CUB tree: keys '<class>/<name>', 10 captions each, boxes, class_info."""
    keys = train + test
    cub = root / "CUB_200_2011"
    cub.mkdir(parents=True)
    (cub / "images.txt").write_text("".join(f"{i} {k}.jpg\n" for i, k in enumerate(keys, 1)))
    boxes = "".join(f"{i} 5.0 4.0 20.0 16.0\n" for i in range(1, len(keys) + 1))
    (cub / "bounding_boxes.txt").write_text(boxes)
    for k in keys:
        write_image(cub / "images" / f"{k}.jpg")
        text = root / "text" / f"{k}.txt"
        text.parent.mkdir(parents=True, exist_ok=True)
        text.write_text("\n".join(CUB_CAPTIONS) + "\n")
    for split, names in (("train", train), ("test", test)):
        (root / split).mkdir()
        classes = [int(k[:3]) for k in names]
        if py2:
            (root / split / "filenames.pickle").write_bytes(
                py2_pickle([k.encode("ascii") for k in names])
            )
            (root / split / "class_info.pickle").write_bytes(py2_pickle(classes))
        else:
            write_pickle(root / split / "filenames.pickle", names)
            write_pickle(root / split / "class_info.pickle", classes)
    return root
