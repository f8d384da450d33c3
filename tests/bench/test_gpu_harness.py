"""The CUDA paths of the harness (events, graphs, peak memory, profiler phases); GPU only."""

import pytest
import torch

from attngan_fast.bench.ops import TimingConfig, bench_shape, implementations
from attngan_fast.bench.phases import phase_times
from attngan_fast.bench.roofline import measure_ceilings
from attngan_fast.bench.shapes import TINY_SHAPES
from attngan_fast.bench.timing import measure, peak_memory_mb

pytestmark = pytest.mark.gpu


def test_events_graphs_and_peak_memory():
    x = [torch.randn(1 << 20, device="cuda") for _ in range(3)]
    plain = measure(lambda s: s * 2, x, device="cuda", min_reps=5, max_reps=5)
    graph = measure(lambda s: s * 2, x, device="cuda", min_reps=5, max_reps=5, cuda_graph=True)
    assert plain.median_ms > 0 and graph.median_ms > 0 and graph.cuda_graph
    assert peak_memory_mb(lambda s: s * 2, x[0], device="cuda") == pytest.approx(4.0, rel=0.1)


def test_every_implementation_runs_on_the_tiny_shapes():
    ceilings = measure_ceilings("cuda", small=True)
    device = torch.device("cuda")
    for shape in TINY_SHAPES:
        rows = bench_shape(shape, "bf16", device, ceilings, TimingConfig.smoke())
        ok = {r["backend"] for r in rows if r["status"] == "ok"}
        assert {r["backend"] for r in rows} == set(implementations(shape.op, device))
        # the harness's own paths must work; a fast backend's failure is its tests' business
        assert {"eager", "compiled", "torch"} <= ok, [r["status"] for r in rows]
        assert all(r["peak_mb"] is not None for r in rows if r["status"] == "ok")


def test_profiler_phases_on_cuda():
    from torch import nn

    from attngan_fast.bench.phases import PhaseRanges

    net = nn.Linear(256, 256).cuda()
    x = torch.randn(64, 256, device="cuda")
    ranges = PhaseRanges()
    ranges.module(net, "N")
    with ranges:
        phases = phase_times(lambda: net(x).sum().backward(), torch.device("cuda"))
    assert phases.get("N", 0) > 0
