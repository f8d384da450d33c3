"""A sweep's table (Markdown and JSON) and plot, beside the talk's CUB numbers.

The plot needs matplotlib (``pip install "attngan-fast[experiment]"``); without it the table is
still written and the plot is skipped with a message.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from attngan_fast.data.synth_birds import PALETTE

TITLES = {
    "lambda": "The DAMSM weight lambda (AttnGAN1)",
    "baselines": "AttnGAN against the systems before it",
}


def _pm(mean: float | None, std: float | None = None, digits: int = 1) -> str:
    if mean is None:
        return "—"
    return f"{mean:.{digits}f}" if std is None else f"{mean:.{digits}f} ± {std:.{digits}f}"


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    """One row per setting: its scores here, then the talk's CUB numbers."""
    has_attr = any("attribute_accuracy" in r for r in rows)
    has_is = any("inception_score" in r for r in rows)
    head = ["setting", "steps", "R-precision (%)"]
    head += ["attribute acc. (%)"] if has_attr else []
    head += ["IS", "FID"] if has_is else []
    head += ["train (min)", "talk: IS (CUB)", "talk: R-precision (CUB, %)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["label"], str(r["steps"]), _pm(r["r_precision"], r["r_precision_std"])]
        if has_attr:
            cells.append(_pm(r.get("attribute_accuracy")))
        if has_is:
            cells += [
                _pm(r.get("inception_score"), r.get("inception_score_std"), 2),
                _pm(r.get("fid")),
            ]
        cells += [
            f"{r['train_seconds'] / 60:.1f}",
            _pm(r.get("talk_is"), digits=2),
            _pm(r.get("talk_r_precision"), digits=2),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_report(
    name: str, rows: Sequence[dict[str, Any]], out: Path, log: Callable[[str], None] = print
) -> tuple[Path, Path, Path | None]:
    """Write ``<out>/<name>.md``, ``<name>.json`` and (with matplotlib) ``<name>.png``."""
    out.mkdir(parents=True, exist_ok=True)
    r = rows[0]
    note = (
        f"{len(rows)} settings, {r['steps']} steps each (batch {r['batch']}, seed "
        f"{r['key']['seed']}); R-precision over {r['r_precision_images']} generated test images, "
        f"true caption against {r['r_precision_candidates'] - 1} of other classes"
    )
    md = out / f"{name}.md"
    md.write_text(f"## {TITLES.get(name, name)}\n\n{note}.\n\n{markdown_table(rows)}", "utf-8")
    js = out / f"{name}.json"
    js.write_text(json.dumps({"experiment": name, "rows": list(rows)}, indent=2) + "\n", "utf-8")
    plot = write_plot(name, rows, out / f"{name}.png", log)
    log(f"table: {md} and {js}" + (f"; plot: {plot}" if plot else ""))
    return md, js, plot


def write_plot(
    name: str, rows: Sequence[dict[str, Any]], path: Path, log: Callable[[str], None] = print
) -> Path | None:
    """Bars of R-precision (± std over folds) and attribute accuracy per setting, their chance
    levels as dashed lines, and the talk's CUB R-precision as markers where it gives one; None
    without matplotlib."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        log('no plot: matplotlib is missing (pip install "attngan-fast[experiment]")')
        return None
    labels = [r["label"] for r in rows]
    x = list(range(len(rows)))
    has_attr = any("attribute_accuracy" in r for r in rows)
    width = 0.4 if has_attr else 0.6
    fig = Figure(figsize=(max(6.0, 1.6 * len(rows)), 4.2), layout="constrained")
    ax = fig.add_subplot()
    shift = -width / 2 if has_attr else 0.0
    ax.bar(
        [i + shift for i in x], [r["r_precision"] for r in rows], width,
        yerr=[r["r_precision_std"] for r in rows], capsize=3, label="R-precision (here)",
    )  # fmt: skip
    if has_attr:
        ax.bar(
            [i + width / 2 for i in x], [r.get("attribute_accuracy", 0.0) for r in rows], width,
            label="attribute accuracy (here)",
        )  # fmt: skip
    chance = 100 / rows[0]["r_precision_candidates"]
    ax.axhline(chance, color="C0", lw=0.8, ls="--", label=f"R-precision by chance ({chance:g})")
    if has_attr:
        ax.axhline(100 / len(PALETTE), color="C1", lw=0.8, ls="--", label="attribute, by chance")
    talk = [(i, r["talk_r_precision"]) for i, r in zip(x, rows) if r.get("talk_r_precision")]
    if talk:
        ax.plot(*zip(*talk), "kD", label="R-precision, talk (CUB)")
    ax.set_xticks(x, labels, rotation=15)
    ax.set_ylabel("%")
    ax.set_title(TITLES.get(name, name))
    ax.legend(fontsize="small")
    fig.savefig(path, format="png", dpi=110)
    return path
