"""The ``cuda`` backend without an installed ``_C``: built on first use, or a clear refusal; and
what ``cuda_build`` decides for every build (toolkit, C++ standard, sources, architectures).

The real builds (the wheel and the first-use build against the CUDA torch) run in
tools/ci_cuda_build.sh; here ``torch.utils.cpp_extension.load`` is replaced by a recorder.
"""

from __future__ import annotations

import logging
import stat
import types
from pathlib import Path

import pytest
import torch
import torch.utils.cpp_extension as cpp

from attngan_fast.ops import (
    BackendUnavailableError,
    available_backends,
    cuda_build,
    cuda_ext,
    registry,
)


def _fake_module() -> types.ModuleType:
    module = types.ModuleType(cuda_ext.JIT_NAME)
    for name in cuda_build.BINDINGS:
        setattr(module, name, lambda *args: ("called", args))
    return module


@pytest.fixture
def cuda_torch(monkeypatch, tmp_path):
    """A machine where _C is missing but could be built: CUDA torch, a toolkit, ninja."""
    toolkit = tmp_path / "cuda"
    (toolkit / "bin").mkdir(parents=True)
    (toolkit / "include").mkdir()
    (toolkit / "bin" / "nvcc").write_text("#!/bin/sh\n")
    (toolkit / "include" / "cuda_runtime.h").write_text("")
    monkeypatch.setattr(cuda_ext, "_C", None)
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    monkeypatch.setenv("CUDA_HOME", str(toolkit))
    monkeypatch.delenv(cuda_ext.NO_BUILD_ENV, raising=False)
    monkeypatch.setattr(cpp, "is_ninja_available", lambda: True)
    calls = []

    def load(**kwargs):
        calls.append(kwargs)
        return _fake_module()

    monkeypatch.setattr(cpp, "load", load)
    return types.SimpleNamespace(toolkit=toolkit, calls=calls)


def test_first_call_builds_the_extension_once_and_says_so(cuda_torch, caplog):
    assert cuda_ext._extension_missing() == ""
    with caplog.at_level(logging.WARNING, logger="attngan_fast"):
        out = cuda_ext.binding("word_attention_forward")("q", "s", None, True, False)
        cuda_ext.binding("batch_norm_act_forward")("x", None, None, None, None, None, True, 1e-5,
                                                   "glu")  # fmt: skip
    assert out[0] == "called"
    assert len(cuda_torch.calls) == 1  # built once, then reused
    call = cuda_torch.calls[0]
    assert call["name"] == cuda_ext.JIT_NAME
    sources = [Path(s).name for s in call["sources"]]
    assert "bindings.cpp" in sources and "word_attention.cu" in sources
    assert call["extra_include_paths"] == [str(cuda_build.source_dir())]
    std = f"-std={cuda_build.cxx_standard()}"
    assert std in call["extra_cflags"] and std in call["extra_cuda_cflags"]
    text = caplog.text
    assert "building it with torch.utils.cpp_extension.load" in text
    assert cuda_ext.NO_BUILD_ENV in text


def test_the_env_var_turns_the_build_off(cuda_torch, monkeypatch):
    monkeypatch.setenv(cuda_ext.NO_BUILD_ENV, "1")
    why = cuda_ext._extension_missing()
    assert "not built" in why and cuda_ext.NO_BUILD_ENV in why
    assert "cuda" not in available_backends("word_attention", "cuda")
    with pytest.raises(BackendUnavailableError, match=cuda_ext.NO_BUILD_ENV):
        cuda_ext.binding("word_attention_forward")("q", "s", None, True, False)
    assert cuda_torch.calls == []


def test_a_build_lacking_a_binding_is_refused(cuda_torch, monkeypatch):
    broken = _fake_module()
    del broken.damsm_word_similarity_backward
    monkeypatch.setattr(cpp, "load", lambda **kwargs: broken)
    with pytest.raises(ImportError, match="damsm_word_similarity_backward"):
        cuda_ext.extension()


def test_no_toolkit_and_cpu_torch_are_named(monkeypatch):
    monkeypatch.setattr(cuda_ext, "_C", None)
    monkeypatch.setattr(torch.version, "cuda", None)
    monkeypatch.delenv(cuda_ext.NO_BUILD_ENV, raising=False)
    assert "built without CUDA" in cuda_ext.why_no_build()
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    monkeypatch.setenv("CUDA_HOME", "/nonexistent/cuda")
    assert "holds no CUDA toolkit" in cuda_ext.why_no_build()


def test_extension_status_reports_without_building(cuda_torch):
    status = cuda_ext.extension_status()
    assert status["built"] is False and status["first_use_build"] == "possible"
    assert cuda_torch.calls == []


# --- cuda_build ---------------------------------------------------------------------------------


def test_cxx_standard_follows_torchs_headers(monkeypatch, tmp_path):
    for guard, expected in (("202002L", "c++20"), ("201703L", "c++17")):
        aten = tmp_path / guard / "ATen"
        aten.mkdir(parents=True)
        (aten / "ATen.h").write_text(f"#if !defined(_MSC_VER) && __cplusplus < {guard}\n#error\n")
        monkeypatch.setattr(cpp, "include_paths", lambda *a, d=aten.parent: [str(d)])
        assert cuda_build.cxx_standard() == expected
    assert cuda_build.compile_flags()["nvcc"][1] == "-std=c++17"


def test_nvcc_wrapper_on_path_leads_to_the_real_toolkit(monkeypatch, tmp_path):
    """nvcc on PATH is a script exec-ing the toolkit's nvcc: the toolkit is where nvcc says."""
    toolkit = tmp_path / "cuda-13.0"
    (toolkit / "bin").mkdir(parents=True)
    (toolkit / "targets" / "x86_64-linux" / "include").mkdir(parents=True)
    (toolkit / "targets" / "x86_64-linux" / "include" / "cuda_runtime.h").write_text("")
    real = toolkit / "bin" / "nvcc"
    real.write_text(f'#!/bin/sh\necho "#$ _HERE_={toolkit}/bin" >&2\n')
    wrappers = tmp_path / "wrappers"
    wrappers.mkdir()
    wrapper = wrappers / "nvcc"
    wrapper.write_text(f'#!/bin/sh\nexec {real} "$@"\n')
    for script in (real, wrapper):
        script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.delenv("CUDA_HOME", raising=False)
    monkeypatch.delenv("CUDA_PATH", raising=False)
    monkeypatch.setenv("PATH", str(wrappers))  # the scripts call nothing through PATH
    home, how = cuda_build.find_cuda_home()
    assert home == toolkit and "nvcc on PATH" in how


def test_torchs_guess_is_the_last_resort(monkeypatch, tmp_path):
    toolkit = tmp_path / "cuda"
    (toolkit / "bin").mkdir(parents=True)
    (toolkit / "include").mkdir()
    (toolkit / "bin" / "nvcc").write_text("")
    (toolkit / "include" / "cuda_runtime.h").write_text("")
    monkeypatch.delenv("CUDA_HOME", raising=False)
    monkeypatch.delenv("CUDA_PATH", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "no-nvcc-here"))
    monkeypatch.setattr(cpp, "CUDA_HOME", str(toolkit))
    assert cuda_build.find_cuda_home() == (toolkit, "torch.utils.cpp_extension.CUDA_HOME")


def test_default_archs_end_with_ptx(monkeypatch):
    monkeypatch.delenv("TORCH_CUDA_ARCH_LIST", raising=False)
    assert cuda_build.arch_list().split(";")[-1] == "9.0+PTX"
    monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", "8.0")
    assert cuda_build.arch_list() == "8.0"


def test_bindings_match_what_the_backend_calls():
    """Every ``_C.<name>`` the cuda backend calls is in BINDINGS (the CI build checks them):
    the bindings its registered kernels are, and those its adapters call."""
    import inspect
    import re

    bound = {
        getattr(fn, "binding", None)
        for impl in (registry.implementation(op, "cuda") for op in cuda_ext._KERNELS)
        for fn in (impl.forward, impl.backward)
    } - {None}
    direct = set(re.findall(r"extension\(\)\.(\w+)\(", inspect.getsource(cuda_ext)))
    assert bound | direct == set(cuda_build.BINDINGS)
