"""``attngan-fast env``: what a bug report needs to say about this installation.

    attngan-fast env           # readable lines
    attngan-fast env --json    # the same as one JSON object

Versions (attngan-fast, Python, torch and the CUDA it was built with, Triton), whether the CUDA
extension ``attngan_fast._C`` is built and for which architectures (or why not, and whether the
``cuda`` backend can build it on first use), whether the CPU extension can be built here, the
toolkit found for such a build, and each visible GPU's name and compute capability (torch),
with driver and memory from NVML when nvidia-ml-py is installed
(``pip install "attngan-fast[gpu]"``). Reading this builds nothing and never fails on a missing
piece: what cannot be read says so.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from collections.abc import Callable, Sequence
from typing import Any

import torch

import attngan_fast
from attngan_fast.ops import cpu_ext, cuda_build, cuda_ext


def triton_version() -> str | None:
    """The installed Triton's version, None when it is not installed."""
    try:
        import triton
    except ImportError:
        return None
    return triton.__version__


def _text(value: Any) -> Any:
    return value.decode() if isinstance(value, bytes) else value


# What NVML is asked about each GPU (a query a card or driver does not support gives None).
_NVML_READS: dict[str, Callable[[Any, Any], Any]] = {
    "name": lambda nv, h: _text(nv.nvmlDeviceGetName(h)),
    "capability": lambda nv, h: "{}.{}".format(*nv.nvmlDeviceGetCudaComputeCapability(h)),
    "memory_gib": lambda nv, h: round(nv.nvmlDeviceGetMemoryInfo(h).total / 2**30, 1),
    "memory_used_mib": lambda nv, h: nv.nvmlDeviceGetMemoryInfo(h).used // 2**20,
    "sm_clock_mhz": lambda nv, h: nv.nvmlDeviceGetClockInfo(h, nv.NVML_CLOCK_SM),
    "mem_clock_mhz": lambda nv, h: nv.nvmlDeviceGetClockInfo(h, nv.NVML_CLOCK_MEM),
    "max_sm_clock_mhz": lambda nv, h: nv.nvmlDeviceGetMaxClockInfo(h, nv.NVML_CLOCK_SM),
    "max_mem_clock_mhz": lambda nv, h: nv.nvmlDeviceGetMaxClockInfo(h, nv.NVML_CLOCK_MEM),
    "power_limit_w": lambda nv, h: nv.nvmlDeviceGetPowerManagementLimit(h) / 1000,
    "temperature_c": lambda nv, h: nv.nvmlDeviceGetTemperature(h, nv.NVML_TEMPERATURE_GPU),
}


def nvml_gpus(index: int | None = None) -> list[dict[str, Any]] | str:
    """What NVML says of every GPU (or of the one at ``index``): index, driver and the fields of
    ``_NVML_READS`` (None where a query fails); or why NVML cannot say."""
    try:
        import pynvml
    except ImportError:
        return 'nvidia-ml-py is not installed (pip install "attngan-fast[gpu]")'
    try:
        pynvml.nvmlInit()
    except Exception as exc:  # no driver, or a container without NVML
        return f"NVML unavailable: {exc}"
    try:
        driver = _text(pynvml.nvmlSystemGetDriverVersion())
        indices = range(pynvml.nvmlDeviceGetCount()) if index is None else [index]
        gpus = []
        for i in indices:
            handle = pynvml.nvmlDeviceGetHandleByIndex(i)
            gpu: dict[str, Any] = {"index": i, "driver": driver}
            for key, read in _NVML_READS.items():
                try:
                    gpu[key] = read(pynvml, handle)
                except Exception:  # one unsupported query must not lose the others
                    gpu[key] = None
            gpus.append(gpu)
        return gpus
    except Exception as exc:  # the driver or the device count failing loses the report
        return f"NVML query failed: {exc}"
    finally:
        pynvml.nvmlShutdown()


def _torch_gpus() -> list[dict[str, Any]]:
    if not torch.cuda.is_available():
        return []
    out = []
    for index in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(index)
        out.append({"index": index, "name": props.name,
                    "capability": f"{props.major}.{props.minor}"})  # fmt: skip
    return out


def report() -> dict[str, Any]:
    """Everything ``attngan-fast env`` prints, as a dict of plain values."""
    home, how = cuda_build.find_cuda_home()
    return {
        "attngan_fast": attngan_fast.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "torch_archs": torch.cuda.get_arch_list() if torch.version.cuda else [],
        "cuda_available": torch.cuda.is_available(),
        "triton": triton_version() or "not installed",
        "extension": cuda_ext.extension_status(),
        "cpu_extension": cpu_ext.status(),
        "cuda_toolkit": {
            "path": str(home) if home else None,
            "found_by": how,
            "nvcc": cuda_build.nvcc_version(home) if home else None,
            "cxx_standard": cuda_build.cxx_standard(),
        },
        "gpus": _torch_gpus(),
        "nvml": nvml_gpus(),
    }


def _lines(data: dict[str, Any]) -> list[str]:
    ext = data["extension"]
    if ext["built"]:
        archs = ext.get("archs")
        where = (
            ", ".join(archs["sass"] + [f"{p} (PTX)" for p in archs["ptx"]])
            if archs
            else "archs unknown (no cuobjdump)"
        )
        missing = ext.get("missing_bindings")
        ext_line = f"built ({ext['file']}; {where})" + (f"; MISSING {missing}" if missing else "")
    else:
        ext_line = f"not built ({ext['import_error']}); first-use build {ext['first_use_build']}"
    cpu = data["cpu_extension"]
    cpu_line = (
        f"{cpu['name']} ({cpu['flags']}): " + ("loaded" if cpu["loaded"] else "built on first use")
        if cpu["unavailable"] is None
        else f"off ({cpu['unavailable']}): the cpu backend uses ATen's kernels"
    )
    kit = data["cuda_toolkit"]
    kit_line = (
        f"{kit['path']} (nvcc {kit['nvcc']}, found by {kit['found_by']})"
        if kit["path"]
        else kit["found_by"]
    )
    gpus = [f"{g['index']}: {g['name']} (sm {g['capability']})" for g in data["gpus"]]
    nvml = data["nvml"]
    nvml_lines = (
        [f"{g['index']}: {g['name']}, {g['memory_gib']} GiB, driver {g['driver']}" for g in nvml]
        if isinstance(nvml, list)
        else [nvml]
    )
    return [
        f"attngan-fast  {data['attngan_fast']}",
        f"python        {data['python']} ({data['platform']})",
        f"torch         {data['torch']} (CUDA {data['torch_cuda'] or 'none: a CPU build'}; "
        f"archs {' '.join(data['torch_archs']) or '-'})",
        f"triton        {data['triton']}",
        f"_C            {ext_line}",
        f"CPU ext       {cpu_line}",
        f"toolkit       {kit_line} (C++ standard for torch's headers: {kit['cxx_standard']})",
        f"GPUs (torch)  {'; '.join(gpus) if gpus else 'none visible'}",
        f"GPUs (NVML)   {'; '.join(nvml_lines) if nvml_lines else 'none'}",
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="attngan-fast env", description="Print what a bug report needs about this setup."
    )
    parser.add_argument("--json", action="store_true", help="one JSON object instead of lines")
    args = parser.parse_args(argv)
    data = report()
    if args.json:
        json.dump(data, sys.stdout, indent=2, default=str)
        print()
    else:
        print("\n".join(_lines(data)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
