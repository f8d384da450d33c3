"""ParamEMA follows avg = d * avg + (1 - d) * p; its state dict carries G's current buffers."""

from __future__ import annotations

import torch
from torch import nn

from attngan_fast.train.ema import ParamEMA


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
