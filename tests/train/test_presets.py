"""Every preset of the model family at tiny sizes: one training step, one generate step; the
presets without DAMSM never load or run an image encoder; trained runs load back in generate,
eval and serve."""

from __future__ import annotations

import json
import math

import pytest
import torch
from train_helpers import gan_opts

from attngan_fast.config import config_from_dict, preset
from attngan_fast.models import CNN_ENCODER, GlobalAttentionGeneral, SmallImageEncoder
from attngan_fast.runtime import networks
from attngan_fast.runtime.generation import generate_images
from attngan_fast.train import gan_trainer
from attngan_fast.train.gan_step import build_gan_state, gan_train_step, synthetic_batch
from attngan_fast.train.gan_trainer import train_gan

VOCAB = 30
FAMILY = ["attngan2", "attngan1", "stackgan2", "gan-int-cls", "g_dcgan"]
WITHOUT_DAMSM = ["stackgan2", "gan-int-cls"]


def tiny(name: str, **train) -> object:
    """The preset (``g_dcgan``: birds with GAN.B_DCGAN) at the sizes of the training tests."""
    gan = {"GF_DIM": 2, "DF_DIM": 2, "R_NUM": 1}
    if name == "g_dcgan":
        name, gan = "birds", {**gan, "B_DCGAN": True}
    values = {
        "GAN": gan, "TEXT": {"EMBEDDING_DIM": 16, "WORDS_NUM": 12}, "WORKERS": 0,
        "TRAIN": {"BATCH_SIZE": 4, "SNAPSHOT_INTERVAL": 1, **train},
    }  # fmt: skip
    return config_from_dict(values, preset(name))


class ImageEncoderSpy:
    """Counts every forward of an image encoder and every attempt to build or load one."""

    def __init__(self, monkeypatch):
        self.calls: list[str] = []
        for cls in (SmallImageEncoder, CNN_ENCODER):
            real = cls.forward

            def forward(module, *args, _real=real, _name=cls.__name__, **kwargs):
                self.calls.append(f"{_name}.forward")
                return _real(module, *args, **kwargs)

            monkeypatch.setattr(cls, "forward", forward)
        for module, name in ((networks, "build_image_encoder"), (networks, "load_image_encoder"),
                             (gan_trainer, "load_encoders")):  # fmt: skip
            real = getattr(module, name)

            def wrapped(*args, _real=real, _name=name, **kwargs):
                self.calls.append(_name)
                return _real(*args, **kwargs)

            monkeypatch.setattr(module, name, wrapped)


@pytest.mark.parametrize("name", FAMILY)
def test_preset_trains_one_step_and_generates(name, monkeypatch):
    spy = ImageEncoderSpy(monkeypatch)
    torch.manual_seed(0)
    cfg = tiny(name)
    state = build_gan_state(cfg, VOCAB, "cpu", image_encoder_kind="small")
    batch = synthetic_batch(cfg, VOCAB, 4, generator=torch.Generator().manual_seed(1))
    before = [p.detach().clone() for p in state.generator.parameters()]
    logs = gan_train_step(state, batch)
    assert all(math.isfinite(v) for v in logs.values())
    assert all(not torch.equal(a, b) for a, b in zip(before, state.generator.parameters()))
    attention = [m for m in state.generator.modules() if isinstance(m, GlobalAttentionGeneral)]
    if name in WITHOUT_DAMSM:
        assert state.image_encoder is None and not attention
        assert spy.calls == []
        assert "w_loss" not in logs
        expected = {"stackgan2": "colour_loss", "gan-int-cls": "int_loss"}[name]
        assert expected in logs
    else:
        assert attention and "w_loss" in logs
        assert "SmallImageEncoder.forward" in spy.calls  # the spy sees what it should
    state.generator.eval()
    images, att_maps = generate_images(
        state.generator, state.text_encoder, batch.captions, batch.cap_lens, torch.randn(4, 100)
    )
    assert [x.shape[-1] for x in images] == state.generator.image_sizes
    assert len(att_maps) == len(attention)


@pytest.mark.parametrize("name", [*WITHOUT_DAMSM, "attngan1-lambda0"])
def test_training_without_damsm_never_touches_the_image_encoder(
    name, tmp_path, synth_root, damsm_files, monkeypatch
):
    """StackGAN-v2, GAN-INT-CLS and an AttnGAN with lambda 0 (the lambda sweep's "no DAMSM"
    row): the image encoder file is neither loaded nor its network built or run."""
    spy = ImageEncoderSpy(monkeypatch)
    cfg = tiny("attngan1", SMOOTH={"LAMBDA": 0.0}) if name == "attngan1-lambda0" else tiny(name)
    files = train_gan(cfg, gan_opts(tmp_path / name, synth_root, damsm_files, max_steps=2))
    assert spy.calls == []
    assert files.netG.is_file()
    run = json.loads(files.run_json.read_text())
    assert run["image_encoder"].endswith(".pth")  # named for evaluation, never loaded


def test_the_spy_sees_an_attngan_run_load_its_image_encoder(
    tmp_path, synth_root, damsm_files, monkeypatch
):
    spy = ImageEncoderSpy(monkeypatch)
    train_gan(tiny("attngan1"), gan_opts(tmp_path / "a", synth_root, damsm_files, max_steps=1))
    assert "load_encoders" in spy.calls and "SmallImageEncoder.forward" in spy.calls


@pytest.mark.parametrize("name", FAMILY)
def test_trained_runs_load_in_generate_eval_and_serve(name, tmp_path, synth_root, damsm_files):
    from attngan_fast.eval.cli import main as eval_main
    from attngan_fast.generate import generate_from_checkpoint
    from attngan_fast.serve.engine import DrawingEngine

    run = train_gan(tiny(name), gan_opts(tmp_path / "run", synth_root, damsm_files, max_steps=2))
    caption = "this bird has a red body with blue wings"
    written = generate_from_checkpoint(run.root, [caption], tmp_path / "gen")
    sizes = tiny(name)
    n_images = 1 if sizes.GAN.B_DCGAN else sizes.TREE.BRANCH_NUM
    assert len([p for p in written if "stage" in p.name]) == n_images
    out = tmp_path / "rp.json"
    assert eval_main(["r-precision", "--checkpoint", str(run.root), "--device", "cpu",
                      "--n-images", "8", "--candidates", "3", "--folds", "2",
                      "--batch-size", "4", "--json", str(out)]) == 0  # fmt: skip
    assert 0 <= json.loads(out.read_text())["r_precision_mean"] <= 100
    engine = DrawingEngine.from_checkpoint(run.root, device="cpu")
    result = engine.generate(caption, n=1, seed=3)
    assert [s["size"] for s in result["stages"]] == engine.stage_sizes()
    for att in result["attention"]:  # each map over an image the page has
        assert 1 <= att["stage"] <= len(result["stages"])
    assert engine.info()["model"]["attention_stages"] == [a["stage"] for a in result["attention"]]


@pytest.mark.parametrize("command", ["train", "pretrain-damsm"])
def test_help_lists_every_preset_with_what_it_is(command, capsys):
    from attngan_fast import cli
    from attngan_fast.config import PRESET_HELP

    with pytest.raises(SystemExit) as exc:
        cli.main([command, "--help"])
    assert exc.value.code == 0
    out = " ".join(capsys.readouterr().out.split())  # argparse wraps the help text
    for name, what in PRESET_HELP.items():
        assert f"{name}: {' '.join(what.split())}" in out
    assert {"attngan2", "attngan1", "stackgan2", "gan-int-cls", "birds", "coco"} <= set(PRESET_HELP)
