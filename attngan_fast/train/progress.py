"""Progress bar (tqdm) with losses and images/s, and metrics appended to a JSONL file.

Only the main process (rank 0) shows a bar and writes metrics; other ranks get a silent logger.
Each JSONL line is one record: ``{"step": ..., "epoch": ..., "images_per_s": ..., <losses>}``.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm


def device_summary(device: torch.device, precision: str) -> str:
    """What the progress bar says the run computes on: ``cpu, 2 threads, bf16`` or ``cuda:0, bf16``
    (intra-op threads as set by ``OMP_NUM_THREADS`` or ``torch.set_num_threads``)."""
    if device.type == "cpu":
        return f"cpu, {torch.get_num_threads()} threads, {precision}"
    return f"{device}, {precision}"


class ProgressLogger:
    """A bar over ``total`` steps starting at ``initial``; ``log`` updates it and the JSONL file.

    ``images_per_step`` (batch size x processes) turns step times into images/s, averaged over
    the steps since the previous record.
    """

    def __init__(
        self,
        metrics_file: str | Path | None,
        total: int,
        initial: int = 0,
        images_per_step: int = 1,
        enabled: bool = True,
        show_bar: bool = True,
        desc: str = "train",
    ) -> None:
        self.enabled = enabled
        self.images_per_step = images_per_step
        self.metrics_file = Path(metrics_file) if metrics_file and enabled else None
        if self.metrics_file is not None:
            self.metrics_file.parent.mkdir(parents=True, exist_ok=True)
        self.bar = (
            tqdm(total=total, initial=initial, desc=desc, dynamic_ncols=True, smoothing=0.1)
            if enabled and show_bar
            else None
        )
        self._last_time = time.perf_counter()
        self._last_step = initial

    def log(self, step: int, epoch: int, values: dict[str, float], write: bool = True) -> dict:
        """Advance the bar to ``step``; with ``write`` append a record to the JSONL file."""
        now = time.perf_counter()
        steps = max(0, step - self._last_step)
        elapsed = max(now - self._last_time, 1e-9)
        rate = steps * self.images_per_step / elapsed if steps else 0.0
        record: dict[str, Any] = {"step": step, "epoch": epoch, "images_per_s": round(rate, 2)}
        record.update({k: round(float(v), 5) for k, v in values.items()})
        if self.bar is not None:
            self.bar.update(steps)
            shown = {k: f"{v:.3g}" for k, v in values.items() if k in _SHOWN}
            self.bar.set_postfix({**shown, "img/s": f"{rate:.1f}"}, refresh=False)
        if write and self.metrics_file is not None:
            with open(self.metrics_file, "a", encoding="utf-8") as f:
                f.write(json.dumps({**record, "time": time.time()}) + "\n")
        self._last_time, self._last_step = now, step
        return record

    def write(self, message: str) -> None:
        """Print a line without breaking the bar (main process only)."""
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.write(message)
        else:
            print(message, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def truncate_metrics(path: str | Path, step: int) -> int:
    """Keep the records of ``path`` up to ``step`` (where a resumed run continues from), so the
    steps it redoes are not listed twice; a line cut short by a killed run goes too. Returns the
    number of records removed."""
    path = Path(path)
    if not path.is_file():
        return 0
    kept, removed = [], 0
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
            keep = int(record["step"]) <= step
        except (ValueError, TypeError, KeyError):
            keep = False
        if keep:
            kept.append(line + "\n")
        else:
            removed += 1
    if removed:
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text("".join(kept), encoding="utf-8")
        os.replace(tmp, path)
    return removed


_SHOWN = ("errD0", "errD1", "errD2", "errG_total", "w_loss", "s_loss", "loss", "kl_loss")
