"""``attngan-fast``: every subcommand explains itself; the tiny demo runs end to end."""

from __future__ import annotations

import inspect
import json
import sys

import pytest
import torch

from attngan_fast import cli

SUBCOMMANDS = ["synth-data", "pretrain-damsm", "train", "generate", "demo", "eval", "bench"]


def test_top_level_help_lists_every_subcommand(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert all(name in out for name in SUBCOMMANDS)
    assert "attngan-fast demo" in out


@pytest.mark.parametrize("name", ["synth-data", "pretrain-damsm", "train", "generate", "demo"])
def test_subcommand_help(name, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main([name, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: attngan-fast {name}") and len(out.splitlines()) > 8


@pytest.mark.parametrize("name", ["eval", "bench", "serve"])
def test_delegated_subcommand_help(name, capsys):
    """Delegated to attngan_fast.<name>.cli.main, which prints its own help."""
    with pytest.raises(SystemExit) as exc:
        cli.main([name, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: attngan-fast {name}") and len(out.splitlines()) > 3


def test_a_missing_delegated_module_is_a_broken_install(monkeypatch, capsys):
    """Every delegated module ships with the package: its absence is an error (exit 1) that
    says to reinstall, not a feature still to come."""
    monkeypatch.setitem(sys.modules, "attngan_fast.eval.cli", None)  # import raises
    assert cli.main(["eval", "--help"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("attngan-fast eval: error: this installation of attngan-fast is broken")
    assert "attngan_fast.eval.cli is missing" in err and "reinstall" in err


def test_config_flags_override_the_yml(tmp_path):
    from attngan_fast.train.overrides import resolve_config

    yml = tmp_path / "my.yml"
    yml.write_text("TRAIN:\n  BATCH_SIZE: 7\nGAN:\n  GF_DIM: 16\n")
    cfg = resolve_config("birds", yml, ["GAN.GF_DIM=8", "TRAIN.GENERATOR_LR=1e-4"])
    assert (cfg.TRAIN.BATCH_SIZE, cfg.GAN.GF_DIM, cfg.TRAIN.GENERATOR_LR) == (7, 8, 1e-4)
    with pytest.raises(ValueError, match="unknown config key"):
        resolve_config("birds", None, ["GAN.NOPE=1"])


def test_tiny_demo_end_to_end(tmp_path, capsys):
    """`attngan-fast demo --tiny`: data, DAMSM, GAN, pictures, then `generate` from its run."""
    out = tmp_path / "demo"
    assert cli.main(["demo", "--tiny", "--out", str(out), "--no-progress", "--device", "cpu"]) == 0
    for rel in (
        "data/attributes.json", "damsm/text_encoder0.pth", "damsm/image_encoder0.pth",
        "gan/checkpoint.pt", "gan/Model/netG.pth", "gan/samples/step_0000003.png",
        "gan/samples/step_0000003_attention.png", "gan/metrics.jsonl", "colours.png",
        "timings.txt", "attribute_accuracy.json", "r_precision.json",
    ):  # fmt: skip
        assert (out / rel).is_file(), rel
    assert list((out / "generated").rglob("*_attention.png"))
    printed = capsys.readouterr().out
    assert printed.endswith(f"attngan-fast serve {out / 'gan'}\n")
    assert "The demo wrote:" in printed and str(out / "colours.png") in printed
    assert f"attngan-fast generate --checkpoint {out / 'gan'} " in printed
    gen = tmp_path / "gen"
    code = cli.main(
        ["generate", "--checkpoint", str(out / "gan"), "--out", str(gen), "--device", "cpu",
         "a bird with a red crown"],
    )  # fmt: skip
    assert code == 0
    assert list(gen.rglob("*stage2_128px.png"))
    assert torch.load(out / "gan" / "Model" / "netG.pth", weights_only=True)
    run = json.loads((out / "gan" / "run.json").read_text())
    assert run["augment"] == "none"  # the simple birds are all drawn alike
    from attngan_fast.ops.cpu import native_bf16

    assert run["precision"] == ("bf16" if native_bf16() else "fp32")  # the demo's "auto"


@pytest.mark.parametrize(
    ("flags", "augment"),
    [([], "full"), (["--augment", "crop"], "crop"), (["--augment", "none"], "none")],
)
def test_train_augment_reaches_the_options(flags, augment, monkeypatch, tmp_path):
    from attngan_fast.train import gan_trainer

    seen = {}

    def fake_train(cfg, opts):
        seen["augment"] = opts.augment
        raise SystemExit(0)

    monkeypatch.setattr(gan_trainer, "train_gan", fake_train)
    with pytest.raises(SystemExit):
        cli.main(["train", "--data", str(tmp_path), "--out", str(tmp_path / "run"), *flags])
    assert seen == {"augment": augment}


def test_demo_remakes_data_made_with_other_settings(tmp_path, monkeypatch):
    """data/ is kept for the same SynthBirds settings and made again when they change."""
    import json

    from attngan_fast import demo

    made = []
    real = demo.make_synth_birds
    monkeypatch.setattr(demo, "make_synth_birds", lambda *a, **k: made.append(k) or real(*a, **k))
    monkeypatch.setattr(demo, "pretrain_damsm", _stop)
    out = tmp_path / "demo"
    tiny = demo.demo_settings("tiny")
    for settings in (
        tiny,
        tiny,
        demo.scaled(tiny, variety="full"),
        demo.scaled(tiny, variety="full", n_train=40),
    ):
        with pytest.raises(_Stopped):
            demo.run_demo(out, settings, device="cpu", progress=False)
    assert [k["variety"] for k in made] == [demo.VARIETIES["simple"], demo.VARIETIES["full"],
                                             demo.VARIETIES["full"]]  # fmt: skip
    stamp = json.loads((out / "data" / demo.DATA_STAMP).read_text())
    assert stamp["n_train"] == 40 and stamp["variety"] == "full"
    assert len(json.loads((out / "data" / "attributes.json").read_text())["images"]) == 40 + 8


class _Stopped(Exception):
    pass


def _stop(*args, **kwargs):
    raise _Stopped


def test_demo_precision_and_augmentation_per_size():
    from attngan_fast import demo

    cpu, gpu = demo.demo_settings("cpu"), demo.demo_settings("gpu")
    assert (cpu.precision, cpu.damsm_precision, cpu.augment) == ("auto", "fp32", "none")
    assert (gpu.precision, gpu.damsm_precision, gpu.augment) == ("bf16", "bf16", "full")


def test_demo_cpu_settings_keep_the_classifier_trustworthy():
    """The demo scores with a classifier trained like the eval CLI's (1000 batches), not fewer."""
    from attngan_fast import demo
    from attngan_fast.eval.attribute_accuracy import train_classifier

    default_steps = inspect.signature(train_classifier).parameters["steps"].default
    assert demo.demo_settings("cpu").classifier_steps >= default_steps
    assert demo.demo_settings("gpu").classifier_steps >= default_steps


@pytest.mark.slow
def test_quick_demo_writes_pictures_and_scores(tmp_path, capsys):
    """`attngan-fast demo --quick` (about 2 minutes on 2 cores): pictures and both scores."""
    import json

    out = tmp_path / "demo"
    assert cli.main(["demo", "--quick", "--out", str(out), "--no-progress", "--device", "cpu"]) == 0
    for rel in ("colours.png", "gan/Model/netG.pth", "gan/samples/step_0000080.png"):
        assert (out / rel).is_file(), rel
    attributes = json.loads((out / "attribute_accuracy.json").read_text())
    r_precision = json.loads((out / "r_precision.json").read_text())
    assert 0.0 <= attributes["attribute_accuracy"] <= 1.0
    assert 0.0 <= r_precision["r_precision_mean"] <= 100.0 and r_precision["candidates"] == 20
    printed = capsys.readouterr().out
    assert "attribute accuracy" in printed and "R-precision" in printed


def test_synth_data_command(tmp_path, capsys):
    assert (
        cli.main(["synth-data", str(tmp_path / "b"), "--train", "4", "--test", "2", "--size", "64"])
        == 0
    )
    assert (tmp_path / "b" / "train" / "filenames.pickle").is_file()
    capsys.readouterr()
    assert cli.main(["synth-data", str(tmp_path / "b"), "--train", "4", "--test", "2"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--overwrite" in err


def test_synth_data_bounds_are_the_library_ones():
    from attngan_fast.data import synth_birds

    assert (cli.MAX_IMAGES, cli.MIN_SIZE, cli.MAX_SIZE) == (
        synth_birds.MAX_IMAGES, synth_birds.MIN_SIZE, synth_birds.MAX_SIZE,
    )  # fmt: skip
