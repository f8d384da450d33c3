"""Timing: CUDA events (or ``perf_counter`` on the CPU), warm-up, median and IQR of many runs.

Each timed run gets the next of several input sets in turn, enough of them that the sets together
exceed twice the GPU's L2 cache (50 MB on an H100), so a run never finds its inputs still cached
from the previous one. Work that must happen before a run but is not part of it (the forward
before a timed backward) goes in ``prepare``, outside the events. Optionally the run is captured
in a CUDA graph per input set and the replays are timed (no launch gaps).

    t = measure(lambda s: f(*s), sets, device=x.device)
    t.median_ms, t.iqr_ms
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch

DEFAULT_CACHE_BYTES = 50 * 2**20  # H100 L2; the CPU mode uses it as a stand-in
MAX_SETS = 256


@dataclass
class Timing:
    """Summary of the timed runs, in milliseconds."""

    median_ms: float
    iqr_ms: float
    q1_ms: float
    q3_ms: float
    min_ms: float
    reps: int
    n_sets: int
    cuda_graph: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def cache_bytes(device: torch.device) -> int:
    """The last-level cache the rotation must defeat: the GPU's L2, else 50 MB."""
    if device.type == "cuda":
        size = getattr(torch.cuda.get_device_properties(device), "L2_cache_size", 0)
        if size:
            return int(size)
    return DEFAULT_CACHE_BYTES


def tensor_bytes(obj: Any) -> int:
    """Bytes of every tensor in a (nested) list, tuple or dict."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(tensor_bytes(v) for v in obj)
    return 0


def n_input_sets(set_bytes: int, cache: int, max_sets: int = MAX_SETS) -> int:
    """How many input sets of ``set_bytes`` together exceed twice ``cache`` (at least 2)."""
    return max(2, min(max_sets, math.ceil(2 * cache / max(1, set_bytes)) + 1))


def summarize(samples_ms: Sequence[float], n_sets: int, cuda_graph: bool = False) -> Timing:
    """Median, quartiles and IQR of per-run times."""
    if not samples_ms:
        raise ValueError("no timed runs to summarize")
    xs = sorted(samples_ms)
    if len(xs) >= 2:
        q1, _, q3 = statistics.quantiles(xs, n=4, method="inclusive")
    else:
        q1 = q3 = xs[0]
    return Timing(
        median_ms=statistics.median(xs),
        iqr_ms=q3 - q1,
        q1_ms=q1,
        q3_ms=q3,
        min_ms=xs[0],
        reps=len(xs),
        n_sets=n_sets,
        cuda_graph=cuda_graph,
    )


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_runs(
    run: Callable[[Any], object],
    sets: Sequence[Any],
    prepare: Callable[[Any], Any] | None,
    device: torch.device,
    count: int,
    start_index: int = 0,
) -> list[float]:
    """Per-run milliseconds of ``count`` runs, rotating through ``sets``."""
    if device.type == "cuda":
        events = [
            (torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
            for _ in range(count)
        ]
        for k in range(count):
            s = sets[(start_index + k) % len(sets)]
            state = prepare(s) if prepare is not None else s
            events[k][0].record()
            run(state)
            events[k][1].record()
        torch.cuda.synchronize(device)
        return [a.elapsed_time(b) for a, b in events]
    out = []
    for k in range(count):
        s = sets[(start_index + k) % len(sets)]
        state = prepare(s) if prepare is not None else s
        t0 = time.perf_counter()
        run(state)
        out.append((time.perf_counter() - t0) * 1e3)
    return out


def _reps_for(estimate_ms: float, target_ms: float, min_reps: int, max_reps: int) -> int:
    if estimate_ms <= 0:
        return max_reps
    return int(max(min_reps, min(max_reps, target_ms / estimate_ms)))


def measure(
    run: Callable[[Any], object],
    sets: Sequence[Any],
    *,
    device: torch.device | str,
    prepare: Callable[[Any], Any] | None = None,
    warmup: int = 3,
    min_reps: int = 10,
    max_reps: int = 200,
    target_ms: float = 300.0,
    cuda_graph: bool = False,
) -> Timing:
    """Time ``run(state)`` where ``state = prepare(set)`` (or the set itself), rotating the sets.

    After ``warmup`` runs (which also give a first estimate), as many runs as fit in ``target_ms``
    (between ``min_reps`` and ``max_reps``) are timed one by one. With ``cuda_graph`` (CUDA only,
    no ``prepare``) each set's run is captured once and the graph replays are timed.
    """
    device = torch.device(device)
    if not sets:
        raise ValueError("measure needs at least one input set")
    if cuda_graph:
        if device.type != "cuda":
            raise ValueError("cuda_graph=True needs a CUDA device")
        if prepare is not None:
            raise ValueError("cuda_graph=True cannot time a run that needs prepare()")
        return _measure_graphs(run, sets, device, warmup, min_reps, max_reps, target_ms)
    warm = _time_runs(run, sets, prepare, device, max(1, warmup))
    reps = _reps_for(statistics.median(warm), target_ms, min_reps, max_reps)
    return summarize(_time_runs(run, sets, prepare, device, reps, start_index=len(warm)), len(sets))


def _measure_graphs(
    run: Callable[[Any], object],
    sets: Sequence[Any],
    device: torch.device,
    warmup: int,
    min_reps: int,
    max_reps: int,
    target_ms: float,
) -> Timing:
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):  # warm up off the default stream, as capture requires
        for k in range(max(1, warmup)):
            run(sets[k % len(sets)])
    torch.cuda.current_stream(device).wait_stream(side)
    graphs, keep = [], []
    for s in sets:
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            keep.append(run(s))
        graphs.append(g)
    warm = _time_runs(lambda g: g.replay(), graphs, None, device, max(1, warmup))
    reps = _reps_for(statistics.median(warm), target_ms, min_reps, max_reps)
    samples = _time_runs(lambda g: g.replay(), graphs, None, device, reps)
    return summarize(samples, len(sets), cuda_graph=True)


def peak_memory_mb(
    run: Callable[[Any], object],
    one_set: Any,
    *,
    device: torch.device | str,
    prepare: Callable[[Any], Any] | None = None,
) -> float | None:
    """Extra memory one run allocates at its peak (max_memory_allocated delta), MiB; None on CPU.

    Measured from what is allocated after ``prepare`` (the inputs, and for a backward the forward's
    saved tensors), so it counts the run's own outputs and workspace.
    """
    device = torch.device(device)
    if device.type != "cuda":
        return None
    state = prepare(one_set) if prepare is not None else one_set
    torch.cuda.synchronize(device)
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    out = run(state)
    torch.cuda.synchronize(device)
    peak = torch.cuda.max_memory_allocated(device) - base
    del out, state
    return peak / 2**20
