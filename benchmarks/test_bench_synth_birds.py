"""SynthBirds generation speed: ``pytest benchmarks/test_bench_synth_birds.py --benchmark-only``.

100 images of 256 px per round (the demo's size); the rate in images per second is recorded as
``extra_info["images_per_s"]`` (median round). A speed, so a benchmark, never a unit test: the
unit tests of SynthBirds (``tests/data/test_data_synth_birds.py``) check what it draws.
"""

from __future__ import annotations

import itertools

from attngan_fast.data.synth_birds import make_synth_birds

N_IMAGES = 100


def test_synth_birds_images_per_second(benchmark, tmp_path):
    folders = (tmp_path / f"round{i}" for i in itertools.count())
    benchmark.pedantic(
        lambda: make_synth_birds(next(folders), N_IMAGES, 0, seed=1, image_size=256),
        rounds=3,
        iterations=1,
        warmup_rounds=0,
    )
    benchmark.extra_info["images_per_s"] = N_IMAGES / benchmark.stats.stats.median
