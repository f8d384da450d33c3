"""Checks shared by the training loops (GAN training, DAMSM pretraining) before they start."""

from __future__ import annotations

from typing import Any

from attngan_fast.errors import UsageError
from attngan_fast.train.distributed import DistInfo


def check_minimums(opts: Any, minimums: tuple[tuple[str, str, int], ...]) -> None:
    """Raise UsageError for the first (field, flag, minimum) of ``minimums`` that ``opts``
    (an options dataclass) is below; None fields are unset and pass."""
    for name, flag, low in minimums:
        value = getattr(opts, name)
        if value is not None and value < low:
            raise UsageError(f"{flag} must be >= {low}, got {value}")


def full_batches(n_images: int, batch_size: int, info: DistInfo, data_dir: Any) -> int:
    """Steps in an epoch of ``n_images`` (this process's share); a batch larger than that is a
    UsageError (the run would end at step 0)."""
    if n_images < batch_size:
        per = f" per process ({info.world_size} processes)" if info.world_size > 1 else ""
        raise UsageError(
            f"--batch-size {batch_size} is larger than the {n_images} training images{per} of "
            f"{data_dir}: use --batch-size {n_images} or less"
        )
    return n_images // batch_size
