"""Atomic checkpoint files: saving, weights-only loading, and telling which file a state dict is.

``save_atomic`` writes to a temporary file in the target's folder, flushes it to disk and renames it
over the target with ``os.replace`` (atomic on POSIX and Windows), so a run killed mid-save leaves
the previous checkpoint intact: at worst a stray ``.<name>.*.tmp`` file, which the next successful
save of the same target removes.

``load`` / ``load_torch_file`` read with ``torch.load(weights_only=True)``: tensors and plain
values only (plus the uint32 numpy array of numpy's generator state in a training checkpoint), so
a file that would run code when unpickled is refused. Every failure names the file.
"""

from __future__ import annotations

import glob
import os
import pickle
import re
import tempfile
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from attngan_fast.errors import FileFormatError

try:  # numpy 2
    from numpy._core import multiarray as np_multiarray
except ImportError:  # numpy 1
    from numpy.core import multiarray as np_multiarray


def save_atomic(obj: Any, path: str | os.PathLike[str]) -> Path:
    """``torch.save(obj, path)`` that either fully replaces ``path`` or leaves it untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    remove_stale_temporaries(path)
    return path


def stale_temporaries(path: str | os.PathLike[str]) -> list[Path]:
    """The ``.<name>.*.tmp`` files that interrupted ``save_atomic`` calls left beside ``path``."""
    path = Path(path)
    return sorted(path.parent.glob(f".{glob.escape(path.name)}.*.tmp"))


def remove_stale_temporaries(path: str | os.PathLike[str]) -> list[Path]:
    """Delete what ``stale_temporaries`` lists (one process saves a target at a time)."""
    found = stale_temporaries(path)
    for tmp in found:
        tmp.unlink(missing_ok=True)
    return found


def _fsync_dir(folder: Path) -> None:
    """Persist the rename itself (a no-op where directories cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# What a training checkpoint holds beyond tensors and plain values: numpy's generator state in
# ``seeding.rng_state()``, a uint32 array (pickled as numpy 1 or numpy 2 wrote it). Only the
# uint32 dtype can be built, so no other numpy array (object arrays included) gets through.
_RECONSTRUCT = np_multiarray._reconstruct
CHECKPOINT_GLOBALS: list[Any] = [
    (_RECONSTRUCT, "numpy.core.multiarray._reconstruct"),
    (_RECONSTRUCT, "numpy._core.multiarray._reconstruct"),
    np.ndarray,
    np.dtype,
    type(np.dtype(np.uint32)),
]


def load(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> Any:
    """Load a checkpoint written by ``save_atomic`` (weights only; see the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint file at {path}")
    with torch.serialization.safe_globals(CHECKPOINT_GLOBALS):
        return load_torch_file(path, map_location, "an attngan-fast checkpoint")


def load_torch_file(
    path: str | os.PathLike[str],
    map_location: str | torch.device = "cpu",
    what: str = "a PyTorch state dict file",
) -> Any:
    """``torch.load(path, weights_only=True)``; every failure is one FileFormatError naming
    ``path`` and ``what`` it should be. Python 2 pickles (the original's files) load too."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found; expected {what}")
    try:
        try:
            return torch.load(path, map_location=map_location, weights_only=True)
        except UnicodeDecodeError:  # a Python 2 pickle with non-ASCII strings
            with warnings.catch_warnings():  # torch warns that encoding= is for full unpickling,
                warnings.simplefilter("ignore", UserWarning)  # yet its weights-only one uses it
                return torch.load(
                    path, map_location=map_location, weights_only=True, encoding="latin1"
                )
    except pickle.UnpicklingError as exc:
        refused = _refusal(path, exc)
        if refused == _NUMPY_ONLY:
            raise FileFormatError(
                f"{path}: not {what} (it holds numpy arrays, as a training checkpoint.pt does)"
            ) from None
        if refused:
            raise FileFormatError(
                f"{path}: refused to load: {refused}, which {what} never holds; it could run "
                "code when loaded, do not use it"
            ) from None
        raise FileFormatError(f"{path}: not {what} ({_damaged(exc)})") from None
    except Exception as exc:  # a damaged zip, a truncated or foreign file, a bad storage
        raise FileFormatError(f"{path}: not {what} ({_damaged(exc)})") from None


def _damaged(exc: BaseException) -> str:
    text = str(exc).split("WeightsUnpickler error:", 1)[-1]  # torch's reason, after its advice
    reason = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return f"damaged, or another kind of file: {type(exc).__name__}: {reason[:160]}"


_NUMPY_ONLY = "numpy arrays"


def _refusal(path: Path, exc: pickle.UnpicklingError) -> str | None:
    """What weights-only loading refused in ``path`` (a global, a type), or None if it was
    not a refusal but a damaged file."""
    if "Weights only load failed" not in str(exc):
        return None
    try:  # a scan of the pickle's globals, nothing is loaded
        names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:  # noqa: BLE001 -- not a zip checkpoint: no scan, the message says why
        names = []
    built = re.search(r"allowlisted via `add_safe_globals`, but got (<[^>]*>)", str(exc))
    if built:
        return f"it holds a {built.group(1)}"
    numpy_names = {"numpy.core.multiarray._reconstruct", "numpy._core.multiarray._reconstruct"}
    numpy_names |= {"numpy.ndarray", "numpy.dtype"}
    others = [n for n in names if n not in numpy_names]
    if others:
        return f"it refers to {', '.join(others[:3])}"
    return _NUMPY_ONLY if names else None


# Keys that tell which of this project's files a state dict is, for "is it the right file?" errors.
_KINDS = (
    ("format", "an attngan-fast training checkpoint (checkpoint.pt)"),
    ("h_net1.fc.0.weight", "an AttnGAN generator (netG*.pth)"),
    ("encoder.weight", "a DAMSM text encoder (text_encoder*.pth)"),
    ("emb_features.weight", "a DAMSM image encoder (image_encoder*.pth)"),
    ("img_code_s16.0.weight", "an AttnGAN discriminator (netD*.pth)"),
    ("Conv2d_1a_3x3.conv.weight", "an Inception-v3 state dict"),
)


def state_dict_kind(state: Any) -> str | None:
    """Which of this project's files ``state`` looks like (``"an AttnGAN generator ..."``)."""
    if not isinstance(state, Mapping):
        return None
    keys = {k.removeprefix("module.") for k in state if isinstance(k, str)}
    return next((kind for key, kind in _KINDS if key in keys), None)


def first_non_finite(tensors: Mapping[str, torch.Tensor]) -> str | None:
    """The name of the first floating-point tensor of ``tensors`` holding a NaN or an infinity."""
    floats = [(name, t) for name, t in tensors.items() if t.is_floating_point()]
    if not floats or torch.stack([torch.isfinite(t).all() for _, t in floats]).all():
        return None  # one device sync for all tensors
    return next(name for name, t in floats if not torch.isfinite(t).all())


def load_state_dict_file(
    path: str | os.PathLike[str], what: str = "a state dict"
) -> dict[str, Any]:
    """A state dict saved by ``torch.save`` (also the original's PyTorch 0.3 / Python 2 files, and
    ``{"state_dict": ...}`` wrappers); FileFormatError naming ``path`` when it holds anything else.
    """
    path = Path(path)
    state = load_torch_file(path, what=what)
    if isinstance(state, Mapping) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, Mapping) or not all(torch.is_tensor(v) for v in state.values()):
        raise FileFormatError(f"{path}: does not hold a state dict; expected {what}")
    return dict(state)
