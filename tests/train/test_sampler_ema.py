"""ResumableSampler partitions and resumes; ParamEMA follows avg = d * avg + (1 - d) * p."""

from __future__ import annotations

import torch
from torch import nn

from attngan_fast.train.ema import ParamEMA
from attngan_fast.train.sampler import ResumableSampler


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


def test_ema_math():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    ema = ParamEMA(net, decay=0.999)
    expected = [p.detach().clone() for p in net.parameters()]
    for _ in range(3):
        with torch.no_grad():
            for p in net.parameters():
                p.add_(torch.randn_like(p))
        net(torch.randn(5, 3))  # moves the BN buffers
        ema.update(net)
        expected = [e * 0.999 + p.detach() * 0.001 for e, p in zip(expected, net.parameters())]
    for got, want in zip(ema.params, expected):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-7)
    state = ema.state_dict_of(net)
    torch.testing.assert_close(state["0.weight"], expected[0], rtol=0, atol=1e-7)
    assert torch.equal(state["1.running_mean"], net[1].running_mean)  # buffers: G's current ones
    assert not torch.equal(state["0.weight"], net[0].weight)
