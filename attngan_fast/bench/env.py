"""The environment stamp every result carries: GPU, driver, clocks, memory, versions, commit, date.

GPU details come from NVML (``pip install nvidia-ml-py``, imported as ``pynvml``) when it is there,
else from torch alone; every field that cannot be read is None rather than an error.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import torch

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


def _nvml(index: int) -> dict[str, Any]:
    """Driver, clocks (MHz), memory (MiB), power limit (W) and temperature through NVML."""
    try:
        import pynvml
    except ImportError:
        return {"nvml": "nvidia-ml-py is not installed"}
    try:
        pynvml.nvmlInit()
    except Exception as exc:  # NVML present but unusable (no driver, container limits)
        return {"nvml": f"nvmlInit failed: {exc}"}
    out: dict[str, Any] = {"nvml": "ok"}
    try:
        handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        reads = {
            "driver": lambda: pynvml.nvmlSystemGetDriverVersion(),
            "nvml_name": lambda: pynvml.nvmlDeviceGetName(handle),
            "sm_clock_mhz": lambda: pynvml.nvmlDeviceGetClockInfo(handle, pynvml.NVML_CLOCK_SM),
            "mem_clock_mhz": lambda: pynvml.nvmlDeviceGetClockInfo(handle, pynvml.NVML_CLOCK_MEM),
            "max_sm_clock_mhz": lambda: pynvml.nvmlDeviceGetMaxClockInfo(
                handle, pynvml.NVML_CLOCK_SM
            ),
            "max_mem_clock_mhz": lambda: pynvml.nvmlDeviceGetMaxClockInfo(
                handle, pynvml.NVML_CLOCK_MEM
            ),
            "memory_total_mib": lambda: pynvml.nvmlDeviceGetMemoryInfo(handle).total // 2**20,
            "memory_used_mib": lambda: pynvml.nvmlDeviceGetMemoryInfo(handle).used // 2**20,
            "power_limit_w": lambda: pynvml.nvmlDeviceGetPowerManagementLimit(handle) / 1000,
            "temperature_c": lambda: pynvml.nvmlDeviceGetTemperature(
                handle, pynvml.NVML_TEMPERATURE_GPU
            ),
        }
        for key, read in reads.items():
            try:
                value = read()
                out[key] = value.decode() if isinstance(value, bytes) else value
            except Exception:  # one unsupported query must not lose the others
                out[key] = None
    finally:
        pynvml.nvmlShutdown()
    return out


def _triton_version() -> str | None:
    try:
        import triton
    except ImportError:
        return None
    return triton.__version__


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
    out.update(_nvml(index))
    return out


def _backends() -> dict[str, Any]:
    from attngan_fast.ops import available_backends
    from attngan_fast.ops._backend import OPS

    device = "cuda" if torch.cuda.is_available() else "cpu"
    return {op: available_backends(op, device) for op in OPS}


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
        "triton": _triton_version(),
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
