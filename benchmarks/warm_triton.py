"""Warm Triton's caches before anything is timed: each Triton-backed op of the benchmarks runs
forward and backward once at the benchmark shapes, per dtype, so its kernels are compiled and
autotuned outside every timed section.

    python benchmarks/warm_triton.py --budget-s 120                       # GPU: the core shapes
    TRITON_INTERPRET=1 python benchmarks/warm_triton.py --device cpu --tiers tiny --dtypes fp32

With ``TRITON_CACHE_AUTOTUNING=1`` (``benchmarks/run_gpu.sh`` sets it) the autotuner's picks are
stored beside the compiled kernels, so the benchmark processes that follow start warm. No new shape
starts once the budget is spent. Prints one line per (shape, dtype) and a last line
``warm: N warmed, M failed, K skipped (budget)``; exits 1 only when nothing could be warmed.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from attngan_fast.bench.ops import DTYPES, implementation, make_case, pass_callables
from attngan_fast.bench.shapes import all_shapes

FAST_BACKENDS = ("triton", "triton_unfused")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--budget-s", type=float, default=120.0)
    p.add_argument("--tiers", default="core", help="comma list of core,extra,tiny")
    p.add_argument("--dtypes", default="bf16,fp32", help="comma list of bf16,fp32")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    start = time.perf_counter()
    warmed = failed = skipped = 0
    g = torch.Generator(device=device).manual_seed(0)
    for shape in all_shapes(tuple(args.tiers.split(","))):
        for dtype_name in args.dtypes.split(","):
            if time.perf_counter() - start > args.budget_s:
                skipped += 1
                continue
            label = f"{shape.op} {shape.name} {shape.config} {dtype_name}"
            t0 = time.perf_counter()
            try:
                case = make_case(shape, DTYPES[dtype_name], device, g)
                for name in FAST_BACKENDS:
                    if name == "triton_unfused" and shape.op != "up_block":
                        continue
                    run, _ = pass_callables(implementation(shape.op, name), "fwd+bwd")
                    run(case)
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
            except Exception as exc:  # one shape's failure is its tests' business
                failed += 1
                print(f"warm: {label}: FAILED {type(exc).__name__}: {str(exc)[:200]}", flush=True)
                continue
            warmed += 1
            print(f"warm: {label}: {time.perf_counter() - t0:.1f} s", flush=True)
    total = time.perf_counter() - start
    print(f"warm: {warmed} warmed, {failed} failed, {skipped} skipped (budget) in {total:.0f} s")
    return 0 if warmed else 1


if __name__ == "__main__":
    sys.exit(main())
