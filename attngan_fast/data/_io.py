"""Path checks and Python-2-compatible pickles shared by the dataset loaders.

Every failure names the path and what the dataset layout expects there. Dataset pickles come from
the web (the original CUB / COCO files): :func:`load_pickle` admits only the data they hold, so a
pickle that would run code is refused before anything of it runs.
"""

from __future__ import annotations

import io
import json
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from attngan_fast.errors import FileFormatError

try:  # numpy 2
    from numpy._core import multiarray as np_multiarray
    from numpy._core import numeric as np_numeric
except ImportError:  # numpy 1
    from numpy.core import multiarray as np_multiarray
    from numpy.core import numeric as np_numeric

PICKLE_PROTOCOL = 2  # the protocol of the original's pickles; Python 2 can read what we write


def require_file(path: Path, expects: str) -> Path:
    """Return ``path`` if it is a file, else raise FileNotFoundError naming it and ``expects``."""
    if not path.is_file():
        state = "is not a file" if path.exists() else "not found"
        raise FileNotFoundError(f"{path}: {state}; {expects}")
    return path


def require_dir(path: Path, expects: str) -> Path:
    """Return ``path`` if it is a folder, else raise FileNotFoundError naming it and ``expects``."""
    if not path.is_dir():
        state = "is not a folder" if path.exists() else "not found"
        raise FileNotFoundError(f"{path}: {state}; {expects}")
    return path


def load_pickle(path: Path, expects: str) -> Any:
    """Load a dataset pickle written by Python 2 or 3, refusing anything that could run code.

    Only what the dataset pickles hold is admitted: lists, tuples, dicts, strings, numbers and
    numpy arrays / scalars of plain dtypes (bool, integer, float, fixed-size string). Python 2
    ``str`` objects are decoded as latin-1 (``encoding='latin1'``), which also reads numpy arrays
    pickled by Python 2; use :func:`as_str` on values that may still be ``bytes``.

    Raises:
        FileNotFoundError: ``path`` is missing (the message names it and ``expects``).
        FileFormatError: anything else, with the path: a damaged file, or one that refers to code
            (an exploit, or an object this loader does not admit).
    """
    require_file(path, expects)
    data = path.read_bytes()
    try:
        obj = _DatasetUnpickler(io.BytesIO(data), encoding="latin1").load()
        _check_admitted(obj)
    except _Refused as exc:
        raise FileFormatError(
            f"{path}: refused to load: {exc}. A dataset pickle holds only lists, dicts, strings, "
            f"numbers and numpy arrays of plain numbers; this one could run code, do not use it "
            f"({expects})"
        ) from None
    except Exception as exc:  # any failure inside the unpickler means a damaged file
        detail = " ".join(f"{type(exc).__name__}: {exc}".split())[:200]
        raise FileFormatError(f"{path}: not a readable pickle ({detail}); {expects}") from None
    return obj


class _Refused(pickle.UnpicklingError):
    """The pickle names a global or holds an object that a dataset pickle never does."""


# Plain numpy dtypes: bool, signed / unsigned integer, float, bytes and unicode strings.
_PLAIN_KINDS = frozenset("biufSU")
_NUMPY_CORE = ("numpy.core.multiarray", "numpy._core.multiarray")  # numpy 1 and numpy 2 names
_NUMPY_NUMERIC = ("numpy.core.numeric", "numpy._core.numeric")


def _plain_dtype(spec: Any, align: bool = False, copy: bool = False) -> np.dtype:
    dtype = np.dtype(spec, align, copy)
    _check_dtype(dtype)
    return dtype


def _check_dtype(dtype: Any) -> None:
    if not isinstance(dtype, np.dtype) or dtype.kind not in _PLAIN_KINDS or dtype.fields:
        raise _Refused(f"a numpy array of dtype {dtype!r}")


def _reconstruct(subtype: Any, shape: Any, dtype: Any) -> np.ndarray:
    if subtype is not np.ndarray:
        raise _Refused(f"a numpy array subclass {subtype!r}")
    return _NP_RECONSTRUCT(np.ndarray, shape, dtype)


def _scalar(dtype: Any, data: Any = None) -> np.generic:
    _check_dtype(dtype)
    return _NP_SCALAR(dtype, data) if data is not None else _NP_SCALAR(dtype)


def _frombuffer(buffer: Any, dtype: Any, shape: Any, order: Any) -> np.ndarray:
    _check_dtype(dtype)
    return _NP_FROMBUFFER(buffer, dtype, shape, order)


def _latin1_bytes(text: Any, encoding: Any = "latin1") -> bytes:
    """``_codecs.encode``: how Python 3 protocol-2 pickles store ``bytes`` (latin-1 only)."""
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise _Refused(f"_codecs.encode with encoding {encoding!r}")
    return text.encode("latin1")


_NP_RECONSTRUCT = np_multiarray._reconstruct
_NP_SCALAR = np_multiarray.scalar
_NP_FROMBUFFER = np_numeric._frombuffer
_ADMITTED = {
    **{(m, "_reconstruct"): _reconstruct for m in _NUMPY_CORE},
    **{(m, "scalar"): _scalar for m in _NUMPY_CORE},
    **{(m, "_frombuffer"): _frombuffer for m in _NUMPY_NUMERIC},
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): _plain_dtype,
    ("_codecs", "encode"): _latin1_bytes,
}


class _DatasetUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the globals numpy arrays of plain dtypes need."""

    def find_class(self, module: str, name: str) -> Any:
        found = _ADMITTED.get((module, name))
        if found is None:
            raise _Refused(f"it refers to {module}.{name}")
        return found


def _check_admitted(obj: Any) -> None:
    """Walk ``obj`` (iteratively: no recursion limit), refusing what a dataset pickle can't hold."""
    stack = [obj]
    while stack:
        item = stack.pop()
        if isinstance(item, (str, bytes, bytearray, int, float, bool, type(None))):
            continue
        if isinstance(item, (list, tuple, set, frozenset)):
            stack.extend(item)
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, (np.ndarray, np.generic)):
            _check_dtype(item.dtype)
        else:
            raise _Refused(f"it holds a {type(item).__name__}")


def load_name_list(path: Path, expects: str) -> list[str]:
    """A pickled list of strings (``filenames.pickle``), as ``str``; FileFormatError otherwise."""
    names = load_pickle(path, expects)
    if not isinstance(names, (list, tuple, np.ndarray)) or not all(
        isinstance(k, (str, bytes)) for k in names
    ):
        raise FileFormatError(
            f"{path}: expected a list of file names, got {_describe(names)}; {expects}"
        )
    return [as_str(k) for k in names]


def _describe(obj: Any) -> str:
    if isinstance(obj, (list, tuple)):
        kinds = sorted({type(x).__name__ for x in obj})
        return f"a {type(obj).__name__} of {', '.join(kinds) or 'nothing'}"
    return f"a {type(obj).__name__}"


def read_json(path: Path, expects: str) -> Any:
    """The JSON value in ``path`` (UTF-8); FileNotFoundError / FileFormatError naming it."""
    require_file(path, expects)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise FileFormatError(f"{path}: not a JSON file ({exc}); {expects}") from None


def dump_pickle(path: Path, obj: Any) -> None:
    """Write ``obj`` with pickle protocol 2, as the original does."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:
        pickle.dump(obj, f, protocol=PICKLE_PROTOCOL)


def as_str(value: str | bytes) -> str:
    """A string from a pickle; ``bytes`` (a Python 2 ``str`` read as bytes) decode as latin-1."""
    return value.decode("latin1") if isinstance(value, bytes) else str(value)
