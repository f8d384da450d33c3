"""Per-phase attribution: forward ops by their range, backward ops through their autograd node."""

import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile

from attngan_fast.bench.phases import (
    BACKWARD_PREFIX,
    PhaseRanges,
    attribute,
    forward_phases,
    phase_of,
)


class _Owner:
    def loss(self, y):
        return (y * y).mean()


def test_backward_work_goes_to_the_phase_of_its_forward():
    a, b = nn.Conv2d(3, 4, 3), nn.Conv2d(4, 2, 3)
    owner = _Owner()
    ranges = PhaseRanges()
    ranges.module(a, "A")
    ranges.module(b, "B")
    ranges.function(owner, "loss", "L")
    x = torch.randn(2, 3, 9, 9)
    with ranges, profile(activities=[ProfilerActivity.CPU]) as prof:
        owner.loss(b(a(x))).backward()
    assert not a._forward_hooks and not a._forward_pre_hooks  # hooks removed on exit
    assert "loss" not in owner.__dict__  # the method is restored
    events = prof.events()
    fwd = forward_phases(events)
    conv_backward = [e for e in events if e.name.startswith(BACKWARD_PREFIX + ": Convolution")]
    assert len(conv_backward) == 2
    assert sorted(phase_of(e, fwd) for e in conv_backward) == ["A", "B"]
    mul_backward = [e for e in events if e.name.startswith(BACKWARD_PREFIX + ": Mul")]
    assert mul_backward and all(phase_of(e, fwd) == "L" for e in mul_backward)
    totals = attribute(events, use_device_time=False)
    assert {"A", "B", "L"} <= set(totals) and all(v >= 0 for v in totals.values())
