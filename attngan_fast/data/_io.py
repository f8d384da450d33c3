"""Path checks and Python-2-compatible pickles shared by the dataset loaders.

Every failure names the path and what the dataset layout expects there.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

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
    """Load a pickle written by Python 2 or 3.

    Python 2 ``str`` objects are decoded as latin-1 (``encoding='latin1'``), which also reads numpy
    arrays pickled by Python 2; use :func:`as_str` on values that may still be ``bytes``.
    """
    require_file(path, expects)
    try:
        with path.open("rb") as f:
            return pickle.load(f, encoding="latin1")
    except (pickle.UnpicklingError, EOFError, AttributeError, ImportError, IndexError) as exc:
        raise ValueError(f"{path}: not a readable pickle ({exc}); {expects}") from exc


def dump_pickle(path: Path, obj: Any) -> None:
    """Write ``obj`` with pickle protocol 2, as the original does."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:
        pickle.dump(obj, f, protocol=PICKLE_PROTOCOL)


def as_str(value: str | bytes) -> str:
    """A string from a pickle; ``bytes`` (a Python 2 ``str`` read as bytes) decode as latin-1."""
    return value.decode("latin1") if isinstance(value, bytes) else str(value)
