"""``attngan-fast bench``: the card's ceilings, the end-to-end iteration, the op microbenchmarks.

    attngan-fast bench                      # GPU: everything, results in benchmarks/results/
    attngan-fast bench --cpu-smoke          # tiny shapes on the CPU, results in a temp dir
    attngan-fast bench --sections ops --tiers core --dtypes bf16
    attngan-fast bench --headline benchmarks/results/<file>.json   # the README table

Sections run in the order ceilings, e2e, ops; each has a wall-clock budget after which the rest
of it is skipped (and listed as skipped). Results are rewritten after every section, so a run cut
short still leaves its files. CPU numbers are never written to ``benchmarks/results``.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

SECTIONS = ("ceilings", "e2e", "ops")


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="attngan-fast bench",
        description="Benchmarks of attngan-fast: ops against eager and torch.compile, the "
        "end-to-end training iteration, the card's measured roofline.",
    )
    p.add_argument(
        "--cpu-smoke",
        action="store_true",
        help="tiny shapes on the CPU, results to a temp dir (a harness check)",
    )
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    p.add_argument("--tiny", action="store_true", help="the tiny CPU shapes and model")
    p.add_argument(
        "--sections",
        type=_csv,
        default=list(SECTIONS),
        help="comma list of ceilings,e2e,ops (default: all)",
    )
    p.add_argument(
        "--tiers",
        type=_csv,
        default=["core", "extra"],
        help="op shape tiers, run in this order (default core,extra)",
    )
    p.add_argument("--ops", type=_csv, default=None, help="only these ops (default: all five)")
    p.add_argument(
        "--dtypes",
        type=_csv,
        default=["bf16", "fp32"],
        help="op dtypes, in run order (default bf16,fp32)",
    )
    p.add_argument("--passes", type=_csv, default=["fwd", "bwd", "fwd+bwd"], help="op passes")
    p.add_argument("--configs", type=_csv, default=["birds", "coco"], help="end-to-end configs")
    p.add_argument(
        "--variants",
        type=_csv,
        default=None,
        help="end-to-end variants a,b,c (default: a,b,c; CPU smoke: a,b)",
    )
    p.add_argument("--no-large-batch", action="store_true", help="skip the larger e2e batch")
    p.add_argument("--ops-budget-s", type=float, default=None, help="wall-clock budget of ops")
    p.add_argument("--e2e-budget-s", type=float, default=None, help="wall-clock budget of e2e")
    p.add_argument(
        "--total-budget-s",
        type=float,
        default=None,
        help="wall-clock budget of the whole run (caps the ops budget)",
    )
    p.add_argument(
        "--cuda-graph", action="store_true", help="time forward and fwd+bwd as CUDA-graph replays"
    )
    p.add_argument(
        "--layout",
        choices=("channels_last", "contiguous"),
        default="channels_last",
        help="memory format of the image ops' inputs",
    )
    p.add_argument(
        "--compile-backend",
        default=None,
        help="torch.compile backend (default inductor; CPU smoke: aot_eager)",
    )
    p.add_argument("--out", default=None, help="folder for the JSON and Markdown results")
    p.add_argument("--copy-to", default=None, help="also copy the result files here")
    p.add_argument(
        "--headline",
        default=None,
        metavar="JSON",
        help="print the README headline table of a result file and exit",
    )
    return p  # fmt: skip


def _log(msg: str) -> None:
    print(msg, flush=True)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmarks; returns the process exit code."""
    args = build_parser().parse_args(argv)
    from attngan_fast.bench import results

    if args.headline:
        print(results.headline_table(results.load(args.headline)))
        return 0
    if args.cpu_smoke:
        args.device, args.tiny = "cpu", True
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    error = _check_choices(args)
    if error:
        print(error, file=sys.stderr)
        return 2
    out_dir = _out_dir(args, device)
    if out_dir is None:
        return 2
    payload = run(args, device, out_dir)
    json_path, md_path = results.write_results(payload, out_dir)
    if args.copy_to:
        Path(args.copy_to).mkdir(parents=True, exist_ok=True)
        for path in (json_path, md_path):
            shutil.copy(path, Path(args.copy_to) / path.name)
    _log(f"\nresults: {json_path}\n         {md_path}\n")
    _log(results.headline_table(payload))
    return 0


def _check_choices(args) -> str | None:
    """A message naming the first unknown value of a comma-list option, else None."""
    from attngan_fast.bench.e2e import VARIANTS
    from attngan_fast.bench.ops import DTYPES, PASSES
    from attngan_fast.bench.shapes import CONFIGS, OPS, TIERS

    choices = {
        "--sections": (args.sections, SECTIONS),
        "--tiers": (args.tiers, TIERS),
        "--ops": (args.ops or [], OPS),
        "--dtypes": (args.dtypes, tuple(DTYPES)),
        "--passes": (args.passes, PASSES),
        "--configs": (args.configs, CONFIGS),
        "--variants": (args.variants or [], tuple(VARIANTS)),
    }
    for flag, (given, allowed) in choices.items():
        bad = [g for g in given if g not in allowed]
        if bad:
            return f"{flag}: unknown {', '.join(bad)}; choose from {', '.join(allowed)}"
    return None


def _out_dir(args, device: torch.device) -> Path | None:
    from attngan_fast.bench.results import RESULTS_DIR

    if args.out:
        out = Path(args.out)
        if device.type == "cpu" and out.resolve() == RESULTS_DIR.resolve():
            print("CPU numbers are not results: write them elsewhere (--out)", file=sys.stderr)
            return None
        return out
    if device.type == "cpu":
        return Path(tempfile.mkdtemp(prefix="attngan-fast-bench-"))
    return RESULTS_DIR


def run(args, device: torch.device, out_dir: Path) -> dict:
    """Every requested section; the payload is written to ``out_dir`` after each one."""
    from attngan_fast.bench import results
    from attngan_fast.bench.e2e import E2EConfig, run_e2e
    from attngan_fast.bench.env import environment
    from attngan_fast.bench.ops import TimingConfig, run_op_benchmarks
    from attngan_fast.bench.roofline import measure_ceilings
    from attngan_fast.bench.shapes import all_shapes

    small = args.tiny or device.type == "cpu"
    tc = TimingConfig.smoke() if small else TimingConfig()
    ec = E2EConfig.smoke() if small else E2EConfig()
    if args.compile_backend:
        tc.compile_backend = ec.compile_backend = args.compile_backend
    tc.cuda_graph = args.cuda_graph
    tc.channels_last = args.layout == "channels_last"
    variants = args.variants or (["a", "b"] if small else ["a", "b", "c"])
    dtypes = ["fp32"] if small and args.dtypes == ["bf16", "fp32"] else args.dtypes
    payload: dict = {
        "env": environment(device),
        "settings": {
            "tiny": args.tiny, "sections": args.sections, "tiers": args.tiers,
            "dtypes": dtypes, "passes": args.passes, "configs": args.configs,
            "variants": variants, "large_batch": not args.no_large_batch,
            "layout": args.layout, "cuda_graph": args.cuda_graph,
            "compile_backend": tc.compile_backend,
        },
    }  # fmt: skip
    _log(f"[bench] {payload['env'].get('gpu') or 'CPU'}; results -> {out_dir}")
    t0 = time.perf_counter()
    end = None if args.total_budget_s is None else time.monotonic() + args.total_budget_s - 15
    # the ceilings are needed by both other sections: measured whenever either runs
    ceilings = measure_ceilings(device, small=small)
    payload["ceilings"] = ceilings.to_dict()
    mm = ceilings.matmul_tflops
    took = time.perf_counter() - t0
    _log(f"[ceilings] copy {ceilings.hbm_gbps:.0f} GB/s, bf16 {mm['bf16']:.1f}, "
         f"tf32 {mm['tf32']:.1f}, fp32 {mm['fp32']:.1f} TFLOP/s ({took:.1f}s)")  # fmt: skip
    results.write_results(payload, out_dir)

    def saver(section: str):
        def save(part: dict) -> None:  # a run cut short still leaves what it measured
            payload[section] = part
            payload["wall_s"] = time.perf_counter() - t0
            results.write_results(payload, out_dir)

        return save

    if "e2e" in args.sections:
        deadlines = [_deadline(args.e2e_budget_s), end]
        deadline = min((d for d in deadlines if d is not None), default=None)
        large = not args.no_large_batch
        run_e2e(args.configs, device, ceilings, ec, variants, large, deadline, _log, saver("e2e"))
    if "ops" in args.sections:
        tiers = ("tiny",) if args.tiny else tuple(args.tiers)
        shapes = [s for s in all_shapes(tiers) if args.ops is None or s.op in args.ops]
        deadlines = [_deadline(args.ops_budget_s), end]
        deadline = min((d for d in deadlines if d is not None), default=None)
        save = saver("ops")
        save(
            run_op_benchmarks(
                shapes, dtypes, device, ceilings, tc, args.passes, deadline, _log, save
            )
        )
    payload["wall_s"] = time.perf_counter() - t0
    return payload


def _deadline(budget_s: float | None) -> float | None:
    return None if budget_s is None else time.monotonic() + budget_s


if __name__ == "__main__":
    raise SystemExit(main())
