"""The timing helpers on trivial functions, under a fake clock (no test depends on real speed)."""

import pytest
import torch

from attngan_fast.bench import timing
from attngan_fast.bench.timing import measure, n_input_sets, peak_memory_mb, summarize


def test_summarize_median_and_iqr():
    t = summarize([5.0, 1.0, 4.0, 2.0, 3.0], n_sets=2)
    assert (t.median_ms, t.q1_ms, t.q3_ms, t.iqr_ms, t.min_ms) == (3.0, 2.0, 4.0, 2.0, 1.0)
    assert t.reps == 5 and t.n_sets == 2 and not t.cuda_graph
    with pytest.raises(ValueError):
        summarize([], n_sets=1)


def test_input_sets_exceed_twice_the_cache():
    cache = 50 * 2**20
    n = n_input_sets(10 * 2**20, cache)
    assert n * 10 * 2**20 > 2 * cache
    assert n_input_sets(10 * 2**30, cache) == 2  # at least two sets, even when one is huge
    assert n_input_sets(1, cache, max_sets=16) == 16


def test_measure_rotates_the_sets_and_counts_the_runs():
    seen = []
    sets = [torch.tensor(float(i)) for i in range(3)]
    t = measure(lambda s: seen.append(int(s)), sets, device="cpu", warmup=2, min_reps=7, max_reps=7)
    assert t.reps == 7 and t.n_sets == 3
    assert seen == [0, 1, 2, 0, 1, 2, 0, 1, 2]  # 2 warm-up runs, then 7 timed, in rotation
    assert t.min_ms <= t.q1_ms <= t.median_ms <= t.q3_ms and t.iqr_ms >= 0


class FakeClock:
    """Stands in for ``time.perf_counter`` in ``bench.timing``: time moves only when told."""

    def __init__(self):
        self.now = 1000.0

    def perf_counter(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


@pytest.fixture
def clock(monkeypatch):
    fake = FakeClock()
    monkeypatch.setattr(timing, "time", fake)
    return fake


def test_measure_times_run_but_not_prepare(clock):
    def prepare(s):
        clock.sleep(0.020)
        return s

    t = measure(lambda s: clock.sleep(0.005), [1], device="cpu", prepare=prepare, warmup=1,
                min_reps=3, max_reps=3)  # fmt: skip
    assert t.reps == 3 and t.median_ms == pytest.approx(5.0) and t.iqr_ms == pytest.approx(0.0)


def test_each_run_is_timed_on_its_own(clock):
    durations = iter([0.5, 0.5, 1.0, 2.0, 3.0, 4.0, 10.0])  # 2 warm-up runs, then 5 timed ones

    t = measure(lambda s: clock.sleep(next(durations)), [1], device="cpu", warmup=2, min_reps=5,
                max_reps=5)  # fmt: skip
    assert (t.min_ms, t.q1_ms, t.median_ms, t.q3_ms) == pytest.approx((1e3, 2e3, 3e3, 4e3))
    assert t.iqr_ms == pytest.approx(2e3)


@pytest.mark.parametrize(
    "run_ms,target_ms,reps",
    [(2.0, 10.0, 5), (2.0, 1000.0, 50), (40.0, 10.0, 2), (0.0, 10.0, 50)],
)
def test_reps_follow_the_target_time(clock, run_ms, target_ms, reps):
    """As many runs as fit in ``target_ms`` by the warm-up estimate, within [min, max]."""
    t = measure(lambda s: clock.sleep(run_ms / 1e3), [1], device="cpu", warmup=1, min_reps=2,
                max_reps=50, target_ms=target_ms)  # fmt: skip
    assert t.reps == reps


def test_peak_memory_is_none_on_cpu_and_graphs_need_cuda():
    assert peak_memory_mb(lambda s: s, 1, device="cpu") is None
    with pytest.raises(ValueError):
        measure(lambda s: s, [1], device="cpu", cuda_graph=True)
