"""Results: one JSON file and one Markdown file per run, and the headline table for the README.

File names carry the GPU and the date: ``<gpu-slug>_<YYYY-MM-DDTHHMM>.json`` / ``.md``
(``nvidia-h100-80gb-hbm3_2026-11-24T0102.json``). The JSON holds everything (environment stamp,
measured ceilings, settings, every row); the Markdown renders it for people.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from attngan_fast.bench.env import device_slug

RESULTS_DIR = Path(__file__).resolve().parents[2] / "benchmarks" / "results"


def result_stem(env: dict[str, Any]) -> str:
    """``<gpu-slug>_<date>T<HHMM>`` from the environment stamp."""
    date = env.get("date_utc", "unknown").replace(":", "")[:15]  # 2026-11-24T0102
    return f"{device_slug(env)}_{date}"


def write_results(payload: dict[str, Any], out_dir: str | Path) -> tuple[Path, Path]:
    """Write ``payload`` as JSON and Markdown into ``out_dir``; returns both paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = result_stem(payload["env"])
    json_path, md_path = out_dir / f"{stem}.json", out_dir / f"{stem}.md"
    json_path.write_text(json.dumps(payload, indent=1, default=str) + "\n", encoding="utf-8")
    md_path.write_text(render_markdown(payload), encoding="utf-8")
    return json_path, md_path


def _f(x: Any, fmt: str = ".3g", suffix: str = "") -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        return f"{x:{fmt}}{suffix}"
    return f"{x}{suffix}"


def _pct(x: Any) -> str:
    return "–" if x is None else f"{100 * x:.0f}%"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def render_env(env: dict[str, Any], ceilings: dict[str, Any] | None) -> str:
    gpu = env.get("gpu") or f"CPU ({env.get('cpu')}, {env.get('cpu_count')} cores)"
    g = lambda k: env.get(k, "–")  # noqa: E731
    lines = [
        f"- device: **{gpu}**, driver {g('driver')}, SM clock {g('sm_clock_mhz')}"
        f"/{g('max_sm_clock_mhz')} MHz, memory clock {g('mem_clock_mhz')} MHz, "
        f"power limit {g('power_limit_w')} W",
        f"- torch {env.get('torch')}, CUDA {env.get('cuda')}, cuDNN {env.get('cudnn')}, "
        f"triton {env.get('triton')}, Python {env.get('python')}",
        f"- commit `{env.get('commit')}`{' (dirty)' if env.get('dirty') else ''}, "
        f"date {env.get('date_utc')}",
        f"- backends available: {env.get('backends')}",
    ]
    if ceilings:
        mm = ceilings.get("matmul_tflops", {})
        lines.append(
            f"- measured ceilings: copy {ceilings['hbm_gbps']:.0f} GB/s (read + written); "
            f"matmul bf16 {mm.get('bf16', 0):.0f}, tf32 {mm.get('tf32', 0):.0f}, "
            f"fp32 {mm.get('fp32', 0):.1f} TFLOP/s"
        )
    return "\n".join(lines) + "\n"


def render_e2e(rows: list[dict]) -> str:
    header = [
        "config", "batch", "variant", "ms/iter (median)", "IQR ms", "images/s", "peak GiB",
        "× (a)", "× (c)", "mem / (a)", "MFU (bf16 peak)", "600 CUB epochs", "status",
    ]  # fmt: skip
    body = []
    for r in rows:
        ok = r.get("status") == "ok"
        body.append([
            str(r["config"]), str(r["batch"]), r.get("label", r["variant"]),
            _f(r.get("median_ms"), ".1f") if ok else "–", _f(r.get("iqr_ms"), ".1f") if ok else "–",
            _f(r.get("images_per_s"), ".1f"), _f(r.get("peak_gib"), ".2f"),
            _f(r.get("speedup_vs_a"), ".2f", "×"), _f(r.get("speedup_vs_c"), ".2f", "×"),
            _f(r.get("memory_vs_a"), ".2f"), _pct(r.get("mfu_bf16")),
            _f(r.get("cub_600_epochs_h"), ".1f", " h"), "ok" if ok else str(r.get("status")),
        ])  # fmt: skip
    out = _table(header, body)
    for r in rows:
        phases = r.get("phases_ms")
        if phases:
            total = sum(phases.values()) or 1.0
            parts = ", ".join(f"{k} {v:.1f} ms ({100 * v / total:.0f}%)" for k, v in phases.items())
            out += f"\n- phases, {r['config']} b{r['batch']} {r['label']}: {parts}"
    return out + "\n"


def render_ops(rows: list[dict]) -> str:
    header = [
        "op", "shape", "dtype", "pass", "backend", "median ms", "IQR ms", "peak MB", "GB/s",
        "TFLOP/s", "% roofline", "bound", "× eager", "× compiled",
    ]  # fmt: skip
    body = []
    for r in rows:
        if r.get("status") != "ok":
            body.append([r["op"], r["shape"], r["dtype"], r["pass"], r["backend"]] + ["–"] * 8
                        + [str(r.get("status"))[:80]])  # fmt: skip
            continue
        body.append([
            r["op"], r["shape"], r["dtype"], r["pass"], r["backend"], _f(r["median_ms"], ".4g"),
            _f(r["iqr_ms"], ".2g"), _f(r.get("peak_mb"), ".1f"), _f(r["gbps"], ".0f"),
            _f(r["tflops"], ".2f"), _pct(r["roofline_frac"]), r["bound"],
            _f(r.get("speedup_vs_eager"), ".2f", "×"), _f(r.get("speedup_vs_compiled"), ".2f", "×"),
        ])  # fmt: skip
    return _table(header, body)


def render_markdown(payload: dict[str, Any]) -> str:
    """The whole run as Markdown: environment, end-to-end table, op table, what was skipped."""
    env = payload["env"]
    title = "CPU smoke run (harness check, not a result)" if not env.get("gpu") else env["gpu"]
    out = [f"# attngan-fast benchmarks: {title}\n", render_env(env, payload.get("ceilings"))]
    settings = payload.get("settings")
    if settings:
        out.append(f"- settings: `{json.dumps(settings, default=str)}`\n")
    e2e = payload.get("e2e")
    if e2e and e2e.get("rows"):
        out += ["\n## End-to-end training iteration\n\n", render_e2e(e2e["rows"])]
    ops_part = payload.get("ops")
    if ops_part and ops_part.get("rows"):
        out += ["\n## Op microbenchmarks\n\n", render_ops(ops_part["rows"])]
    skipped = [*(e2e or {}).get("skipped", []), *(ops_part or {}).get("skipped", [])]
    if skipped:
        out.append("\n## Skipped (time budget)\n\n" + "".join(f"- {s}\n" for s in skipped))
    return "".join(out)


def headline_table(payload: dict[str, Any]) -> str:
    """The README's headline: the end-to-end rows, then each op's best fused backend (fwd+bwd)
    against eager and torch.compile at the core shapes."""
    env = payload["env"]
    out = [f"Measured on {env.get('gpu') or 'CPU'} ({env.get('date_utc', '')[:10]}, "
           f"torch {env.get('torch')}, commit {str(env.get('commit'))[:10]}).\n\n"]  # fmt: skip
    e2e_rows = (payload.get("e2e") or {}).get("rows", [])
    if e2e_rows:
        body = [
            [r["config"], str(r["batch"]), r["label"], _f(r.get("median_ms"), ".0f"),
             _f(r.get("images_per_s"), ".1f"), _f(r.get("peak_gib"), ".1f"),
             _f(r.get("speedup_vs_a"), ".2f", "×"), _f(r.get("cub_600_epochs_h"), ".1f", " h")]
            for r in e2e_rows if r.get("status") == "ok"
        ]  # fmt: skip
        head = ["config", "batch", "variant", "ms/iter", "images/s", "peak GiB", "× (a)",
                "600 CUB epochs"]  # fmt: skip
        out.append(_table(head, body) + "\n")
    best: dict[tuple, dict] = {}
    for r in (payload.get("ops") or {}).get("rows", []):
        if r.get("status") != "ok" or r["pass"] != "fwd+bwd" or r.get("tier") != "core":
            continue
        if r["backend"] not in ("torch", "triton", "cuda"):
            continue
        key = (r["op"], r["shape"], r["dtype"])
        if key not in best or r["median_ms"] < best[key]["median_ms"]:
            best[key] = r
    if best:
        body = [
            [r["op"], r["shape"], r["dtype"], r["backend"], _f(r["median_ms"], ".3f"),
             _f(r.get("speedup_vs_eager"), ".2f", "×"),
             _f(r.get("speedup_vs_compiled"), ".2f", "×"), _pct(r["roofline_frac"])]
            for r in best.values()
        ]  # fmt: skip
        head = ["op (fwd+bwd)", "shape", "dtype", "best backend", "ms", "× eager", "× compiled",
                "% roofline"]  # fmt: skip
        out.append(_table(head, body))
    return "".join(out)


def load(path: str | Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text(encoding="utf-8"))
