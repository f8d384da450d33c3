"""Damaged variants of a good file, for the loader fuzz tests (fixed seed: the same every run)."""

from __future__ import annotations

import random
from collections.abc import Iterator


def mutations(good: bytes, count: int, seed: int, max_random: int = 300) -> Iterator[bytes]:
    """``count`` damaged variants of ``good``, in turn: random bytes (up to ``max_random``), a
    few bit flips, a truncation."""
    rng = random.Random(seed)
    for i in range(count):
        kind = i % 3
        if kind == 0:
            yield bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, max_random)))
        elif kind == 1:
            data = bytearray(good)
            for _ in range(rng.randrange(1, 8)):
                j = rng.randrange(len(data))
                data[j] ^= 1 << rng.randrange(8)
            yield bytes(data)
        else:
            yield good[: rng.randrange(len(good))]
