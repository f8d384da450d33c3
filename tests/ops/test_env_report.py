"""``attngan-fast env``: the bug-report facts, here and with a built _C and NVML faked."""

from __future__ import annotations

import json
import sys
import types

import torch

from attngan_fast import cli, env_report
from attngan_fast.ops import cuda_build, cuda_ext


def test_cli_prints_versions_and_why_c_is_missing(capsys, monkeypatch):
    monkeypatch.setattr(cuda_ext, "_C", None)
    monkeypatch.setitem(sys.modules, "pynvml", None)  # nvidia-ml-py not installed
    assert cli.main(["env"]) == 0
    out = capsys.readouterr().out
    assert f"torch         {torch.__version__}" in out
    assert "triton" in out and "_C            not built" in out
    assert "first-use build" in out
    assert 'nvidia-ml-py is not installed (pip install "attngan-fast[gpu]")' in out


def test_json_report_of_a_built_extension_and_nvml(capsys, monkeypatch, tmp_path):
    fake_c = types.ModuleType("attngan_fast._C")
    fake_c.__file__ = str(tmp_path / "_C.so")
    for name in cuda_build.BINDINGS:
        setattr(fake_c, name, lambda *args: None)
    monkeypatch.setattr(cuda_ext, "_C", fake_c)
    monkeypatch.setattr(
        cuda_ext, "compiled_archs", lambda path: {"sass": ["sm_90"], "ptx": ["compute_90"]}
    )

    class Memory:
        total = 80 * 2**30

    nvml = types.SimpleNamespace(
        nvmlInit=lambda: None,
        nvmlShutdown=lambda: None,
        nvmlSystemGetDriverVersion=lambda: "580.1",
        nvmlDeviceGetCount=lambda: 1,
        nvmlDeviceGetHandleByIndex=lambda i: i,
        nvmlDeviceGetName=lambda h: b"NVIDIA H100 80GB HBM3",
        nvmlDeviceGetCudaComputeCapability=lambda h: (9, 0),
        nvmlDeviceGetMemoryInfo=lambda h: Memory(),
    )
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    assert env_report.main(["--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["extension"]["built"] and data["extension"]["missing_bindings"] == []
    assert data["extension"]["archs"] == {"sass": ["sm_90"], "ptx": ["compute_90"]}
    gpu = data["nvml"][0]
    assert gpu["name"] == "NVIDIA H100 80GB HBM3" and gpu["capability"] == "9.0"
    assert gpu["driver"] == "580.1" and gpu["memory_gib"] == 80.0
    assert env_report.main([]) == 0
    lines = capsys.readouterr().out
    assert "sm_90, compute_90 (PTX)" in lines
    assert "NVIDIA H100 80GB HBM3, 80.0 GiB, driver 580.1" in lines


def test_compiled_archs_reads_a_fatbin(monkeypatch, tmp_path):
    """The architectures come from cuobjdump's listing of the library."""
    tool = tmp_path / "cuobjdump"
    tool.write_text(
        "#!/bin/sh\necho 'ELF file    1: damsm.sm_80.cubin'\n"
        "echo 'ELF file    2: damsm.sm_90.cubin'\necho 'PTX file    1: damsm.sm_90.ptx'\n"
    )
    tool.chmod(0o755)
    monkeypatch.setattr(cuda_ext, "_cuobjdump", lambda: str(tool))
    assert cuda_ext.compiled_archs(tmp_path / "_C.so") == {
        "sass": ["sm_80", "sm_90"],
        "ptx": ["compute_90"],
    }


def test_cpu_extension_line_says_whether_it_can_be_built(capsys, monkeypatch):
    from attngan_fast.ops import cpu_ext

    monkeypatch.setattr(cpu_ext, "_state", {"tried": False, "module": None, "why": None})
    monkeypatch.setenv(cpu_ext.ENV, "0")
    assert cli.main(["env"]) == 0
    out = capsys.readouterr().out
    assert f"CPU ext       off ({cpu_ext.ENV}=0): the cpu backend uses ATen's kernels" in out
    monkeypatch.setattr(cpu_ext, "why_unavailable", lambda: None)
    assert cli.main(["env"]) == 0
    assert f"CPU ext       {cpu_ext.module_name()} (-O3 -fopenmp" in capsys.readouterr().out
