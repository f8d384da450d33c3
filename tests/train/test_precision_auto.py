"""``--precision auto`` and native-bf16 detection on the CPU; the progress bar's device line."""

import pytest
import torch

from attngan_fast.errors import UsageError
from attngan_fast.ops import cpu
from attngan_fast.train import precision
from attngan_fast.train.progress import device_summary

CPU = torch.device("cpu")


@pytest.fixture
def bf16_cpu(monkeypatch):
    def set_native(value: bool) -> None:
        monkeypatch.setattr(cpu, "native_bf16", lambda: value)

    return set_native


def test_auto_is_bf16_on_a_cpu_with_native_bf16(bf16_cpu):
    bf16_cpu(True)
    assert precision.resolve_precision("auto", CPU) == ("bf16", None)


def test_auto_falls_back_to_fp32_with_a_message(bf16_cpu):
    bf16_cpu(False)
    chosen, note = precision.resolve_precision("auto", CPU)
    assert chosen == "fp32"
    assert "AVX-512 BF16 / AMX" in note and "fp32" in note


def test_explicit_bf16_is_kept_on_an_emulating_cpu_with_a_warning(bf16_cpu):
    bf16_cpu(False)
    chosen, note = precision.resolve_precision("bf16", CPU)
    assert chosen == "bf16" and "emulated" in note
    bf16_cpu(True)
    assert precision.resolve_precision("bf16", CPU) == ("bf16", None)


def test_explicit_choices_are_still_checked():
    assert precision.resolve_precision("fp32", CPU) == ("fp32", None)
    with pytest.raises(UsageError, match="fp16 mixed precision needs a CUDA GPU"):
        precision.resolve_precision("fp16", CPU)
    with pytest.raises(UsageError, match="precision must be one of"):
        precision.resolve_precision("fp8", CPU)


def test_cpu_detection_agrees_with_cpuinfo_flags():
    flags = cpu._cpuinfo_flags()
    if not flags:
        pytest.skip("no /proc/cpuinfo flags on this machine")
    assert cpu.native_bf16() == bool({"avx512_bf16", "amx_bf16"} & flags)


def test_cpuinfo_fallback_when_torch_has_no_probe(monkeypatch):
    monkeypatch.setattr(torch, "cpu", object())  # no _is_avx512_bf16_supported
    monkeypatch.setattr(cpu, "_cpuinfo_flags", lambda: {"avx2", "amx_bf16"})
    assert cpu.native_bf16()
    monkeypatch.setattr(cpu, "_cpuinfo_flags", lambda: {"avx2", "avx512f"})
    assert not cpu.native_bf16()


def test_progress_line_names_the_threads():
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(3)
        assert device_summary(CPU, "bf16") == "cpu, 3 threads, bf16"
    finally:
        torch.set_num_threads(old)
    assert device_summary(torch.device("cuda", 0), "fp32") == "cuda:0, fp32"


def test_channels_last_defaults_to_on_for_bf16_on_a_cpu_only():
    from attngan_fast.train.gan_trainer import resolve_channels_last

    assert resolve_channels_last(None, CPU, "bf16") is True
    assert resolve_channels_last(None, CPU, "fp32") is False
    assert resolve_channels_last(None, torch.device("cuda"), "bf16") is False
    assert resolve_channels_last(False, CPU, "bf16") is False  # --no-channels-last
    assert resolve_channels_last(True, CPU, "fp32") is True


def test_train_command_line_channels_last_flags():
    from attngan_fast.cli import build_parser

    parse = build_parser().parse_args
    assert parse(["train", "--data", "d"]).channels_last is None
    assert parse(["train", "--data", "d", "--channels-last"]).channels_last is True
    assert parse(["train", "--data", "d", "--no-channels-last"]).channels_last is False
