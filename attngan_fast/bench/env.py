"""The environment stamp every result carries: GPU, driver, clocks, memory, versions, commit, date.

GPU details come from NVML (``pip install nvidia-ml-py``, imported as ``pynvml``) when it is there,
else from torch alone; every field that cannot be read is None rather than an error. The NVML and
Triton facts are read by ``attngan_fast.env_report`` (``attngan-fast env``), shared with it.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import torch

from attngan_fast.env_report import nvml_gpus, triton_version

REPO_ROOT = Path(__file__).resolve().parents[2]


def git_commit(root: Path = REPO_ROOT) -> dict[str, Any]:
    """``{"commit": sha or None, "dirty": bool or None}`` of the checkout at ``root``."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10
        )
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    if sha.returncode != 0:
        return {"commit": None, "dirty": None}
    dirty = bool(status.stdout.strip()) if status.returncode == 0 else None
    return {"commit": sha.stdout.strip(), "dirty": dirty}


def _gpu(device: torch.device) -> dict[str, Any]:
    if device.type != "cuda" or not torch.cuda.is_available():
        return {"gpu": None}
    index = device.index if device.index is not None else torch.cuda.current_device()
    props = torch.cuda.get_device_properties(index)
    out = {
        "gpu": props.name,
        "compute_capability": f"{props.major}.{props.minor}",
        "multiprocessors": props.multi_processor_count,
        "l2_cache_mb": getattr(props, "L2_cache_size", 0) / 2**20 or None,
        "gpu_memory_gib": props.total_memory / 2**30,
    }
    nvml = nvml_gpus(index)
    if isinstance(nvml, str):
        out["nvml"] = nvml
        return out
    facts = dict(nvml[0])
    out.update(nvml="ok", nvml_name=facts.pop("name"), **facts)
    return out


def _backends() -> dict[str, Any]:
    from attngan_fast.ops import available_backends, registry

    device = "cuda" if torch.cuda.is_available() else "cpu"
    return {op: available_backends(op, device) for op in registry.op_names()}


def environment(device: torch.device | str = "cpu") -> dict[str, Any]:
    """The stamp: device and GPU facts, software versions, numerics flags, git commit, UTC date."""
    device = torch.device(device)
    stamp: dict[str, Any] = {
        "date_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "device": str(device),
        **_gpu(device),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "triton": triton_version(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
        "triton_interpret": os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"),
        **git_commit(),
    }
    try:
        stamp["backends"] = _backends()
    except Exception as exc:  # the stamp must never fail a benchmark
        stamp["backends"] = f"unavailable: {exc}"
    return stamp


def device_slug(stamp: dict[str, Any]) -> str:
    """File-name-safe GPU name (``nvidia-h100-80gb-hbm3``), or ``cpu``."""
    name = stamp.get("gpu") or "cpu"
    return "".join(ch if ch.isalnum() else "-" for ch in name.lower()).strip("-").replace("--", "-")
