"""ResumableSampler partitions the epoch between ranks and resumes mid-epoch."""

from __future__ import annotations

from attngan_fast.runtime.sampler import ResumableSampler


def test_ranks_partition_the_epoch():
    samplers = [ResumableSampler(23, seed=3, rank=r, world_size=3) for r in range(3)]
    parts = [list(s) for s in samplers]
    assert all(len(p) == len(samplers[0]) == 7 for p in parts)
    flat = [i for p in parts for i in p]
    assert len(set(flat)) == len(flat) == 21 and set(flat) <= set(range(23))


def test_epochs_differ_and_repeat():
    s = ResumableSampler(50, seed=1)
    first = list(s)
    s.set_epoch(1)
    second = list(s)
    assert sorted(first) == sorted(second) == list(range(50)) and first != second
    assert list(ResumableSampler(50, seed=1)) == first


def test_resume_mid_epoch():
    s = ResumableSampler(40, seed=5)
    s.set_epoch(2)
    full = list(s)
    s.advance(12)
    state = s.state_dict()
    resumed = ResumableSampler(40, seed=0)
    resumed.load_state_dict(state)
    resumed.set_epoch(2)  # the epoch being resumed keeps its position
    assert list(resumed) == full[12:]
    resumed.set_epoch(3)
    assert resumed.position == 0 and len(list(resumed)) == 40
