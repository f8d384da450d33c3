"""A shuffling sampler that can be split across processes and resumed mid-epoch.

Each epoch's order is a permutation drawn from a generator seeded with ``seed + epoch`` (as
``DistributedSampler`` does), so it depends on nothing else; rank r of W takes every W-th index
of it. ``state_dict`` records the epoch and how many of this rank's indices were consumed, so a
resumed run continues with exactly the samples the interrupted one would have drawn.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


class ResumableSampler(Sampler[int]):
    """Indices of a dataset of ``length`` items for process ``rank`` of ``world_size``.

    ``drop_last`` (default) trims the permutation to a multiple of ``world_size``; otherwise it is
    padded by wrapping around, so every rank yields the same number of indices either way.
    Call ``set_epoch`` before each epoch and ``advance(n)`` after consuming n indices.
    """

    def __init__(
        self,
        length: int,
        *,
        shuffle: bool = True,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = True,
    ) -> None:
        if length <= 0:
            raise ValueError(f"cannot sample from an empty dataset (length {length})")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} out of range for world size {world_size}")
        self.length = length
        self.shuffle = shuffle
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.drop_last = drop_last
        self.epoch = 0
        self.position = 0  # indices of this rank already consumed in this epoch

    def __len__(self) -> int:
        """Indices per rank per epoch (the whole epoch, not what is left of it)."""
        if self.drop_last:
            return self.length // self.world_size
        return math.ceil(self.length / self.world_size)

    def set_epoch(self, epoch: int) -> None:
        """Start ``epoch`` from its beginning unless it is the epoch being resumed."""
        if epoch != self.epoch:
            self.epoch = epoch
            self.position = 0

    def advance(self, count: int) -> None:
        """Record that ``count`` more indices of this epoch were consumed."""
        self.position += count

    def epoch_indices(self) -> list[int]:
        """This rank's indices for the current epoch, from its beginning."""
        if self.shuffle:
            g = torch.Generator()
            g.manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.length, generator=g).tolist()
        else:
            order = list(range(self.length))
        total = len(self) * self.world_size
        if total > len(order):
            order += (order * math.ceil(total / len(order)))[: total - len(order)]
        return order[:total][self.rank :: self.world_size]

    def __iter__(self) -> Iterator[int]:
        return iter(self.epoch_indices()[self.position :])

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position, "seed": self.seed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch = int(state["epoch"])
        self.position = int(state["position"])
        self.seed = int(state["seed"])
