"""Where the CPU time of one AttnGAN training iteration goes: by operator and by network part.

    python benchmarks/cpu_profile.py [--original PATH/TO/AttnGAN/code] [--variants fp32,fast]
        [--batch 8] [--threads 2] [--top 25]

Builds the runners of ``cpu_vs_original.py`` (the original code, patched at run time, and the
library's variants), runs one warm-up iteration each, then profiles one iteration of each with
``torch.profiler`` (CPU activity) and prints, per runner:

* the self CPU time per network part: G's initial stage, word attention, residual blocks and
  upBlock of each later stage, image heads, CA_NET; each D; the image encoder; the DAMSM loss; the
  optimiser steps; the EMA. Backward work is attributed to the part whose forward created it
  (``attngan_fast.bench.phases``);
* the operators with the largest self CPU time.

Self CPU times add up to more than the wall time of the iteration when intra-op threads run in
parallel; compare the parts, not their sum, with the iteration time.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from attngan_fast.bench.phases import PhaseRanges, attribute

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cpu_vs_original import Runner, library_runner, original_runner, random_batch  # noqa: E402


def phase_ranges(runner: Runner) -> PhaseRanges:
    """Ranges around every part of G (per stage), each D, the encoders, DAMSM and optimisers."""
    ranges = PhaseRanges()
    g = runner.modules["G"]
    ranges.module(g, "G other")
    ranges.module(g.ca_net, "G ca_net")
    ranges.module(g.h_net1, "G stage 1 (fc + 4 upBlocks)")
    for i in (1, 2, 3):
        if hasattr(g, f"img_net{i}"):
            ranges.module(getattr(g, f"img_net{i}"), "G image heads")
    for i in (2, 3):
        stage = getattr(g, f"h_net{i}", None)
        if stage is not None:
            ranges.module(stage.att, f"G stage {i} attention")
            ranges.module(stage.residual, f"G stage {i} ResBlocks")
            ranges.module(stage.upsample, f"G stage {i} upBlock")
    for name, module in runner.modules.items():
        if name.startswith("D"):
            for m in (module, module.COND_DNET, module.UNCOND_DNET):
                if m is not None:
                    ranges.module(m, name)
    ranges.module(runner.modules["image_encoder"], "image encoder")
    ranges.module(runner.modules["text_encoder"], "text encoder")
    for owner, attr, part in runner.functions:
        ranges.function(owner, attr, part)
    for opt in runner.optimizers.values():
        ranges.function(opt, "step", "Adam steps")
    return ranges


def profile_runner(runner: Runner, data: dict, top: int) -> tuple[dict[str, float], str]:
    runner.step(data)  # warm-up
    with phase_ranges(runner):
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            runner.step(data)
    parts = attribute(prof.events(), use_device_time=False)
    table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=top)
    return parts, table


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--original", type=Path, help="the original AttnGAN code/ folder")
    p.add_argument("--variants", default="fp32", help="library variants: fp32,bf16,fast")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--config", choices=["birds", "demo"], default="birds")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    data = random_batch(args.batch, stages=2 if args.config == "demo" else 3)
    tmp = Path(tempfile.mkdtemp(prefix="attngan_original_"))
    runners: dict[str, Runner] = {}
    try:
        if args.original is not None:
            runners["original"] = original_runner(args.original.resolve(), args.batch, tmp)
        for v in [v.strip() for v in args.variants.split(",") if v.strip()]:
            runners[f"library {v}"] = library_runner(v, args.batch, args.config)
        results = {name: profile_runner(r, data, args.top) for name, r in runners.items()}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    names = list(results)
    parts = sorted({k for parts, _ in results.values() for k in parts})
    print(f"\nself CPU time per part (ms), batch {args.batch}, {args.threads} threads")
    print(f"{'part':<32}" + "".join(f"{n:>18}" for n in names))
    for part in sorted(parts, key=lambda k: -max(results[n][0].get(k, 0.0) for n in names)):
        print(f"{part:<32}" + "".join(f"{results[n][0].get(part, 0.0):18.0f}" for n in names))
    print(f"{'total':<32}" + "".join(f"{sum(results[n][0].values()):18.0f}" for n in names))
    for name, (_, table) in results.items():
        print(f"\n=== {name}: operators by self CPU time\n{table}")


if __name__ == "__main__":
    main()
