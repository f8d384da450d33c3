"""Every config key is acted on or refused: unknown keys, the original's keys this package does
another way, and model-family settings that would have nothing to act on raise one-line
ConfigErrors naming the key."""

import re

import pytest

from attngan_fast.config import (
    UNSUPPORTED,
    ConfigError,
    check_supported,
    config_from_dict,
    load_config,
    preset,
)
from attngan_fast.errors import UsageError
from attngan_fast.train.overrides import resolve_config


def _one_line(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert "\n" not in text and isinstance(exc.value, UsageError)
    return text


def test_unknown_keys_raise():
    with pytest.raises(ConfigError, match=r"GAN\.B_ATENTION") as exc:
        resolve_config("attngan2", sets=["GAN.B_ATENTION=False"])
    _one_line(exc)
    with pytest.raises(ConfigError, match=r"TRAIN\.COEFF\.COLOUR"):
        config_from_dict({"TRAIN": {"COEFF": {"COLOUR": 1.0}}})


@pytest.mark.parametrize(
    "key, value",
    [("GPU_ID", 3), ("CUDA", False), ("B_VALIDATION", True), ("TRAIN.FLAG", False),
     ("TRAIN.NET_G", "models/bird_AttnGAN2.pth"), ("TRAIN.B_NET_D", False)],
)  # fmt: skip
def test_keys_acted_on_otherwise_are_refused(key, value):
    cfg = resolve_config("attngan2", sets=[f"{key}={value}"])  # loading works...
    with pytest.raises(ConfigError, match=re.escape(repr(key))) as exc:
        check_supported(cfg)  # ... training refuses it
    assert UNSUPPORTED[key][1] in _one_line(exc)


def test_presets_and_shipped_files_are_supported():
    for name in ("birds", "coco", "damsm_birds", "damsm_coco", "attngan1", "stackgan2",
                 "gan-int-cls"):  # fmt: skip
        check_supported(preset(name))
    check_supported(load_config("bird_attn2"))


@pytest.mark.parametrize(
    "sets, key",
    [
        (["GAN.CONDITIONING=PROJECTION"], "TRAIN.COEFF.KL"),
        (["GAN.CONDITIONING=GLU"], "GAN.CONDITIONING"),
        (["TRAIN.COEFF.COLOR_LOSS=1", "TREE.BRANCH_NUM=1"], "TRAIN.COEFF.COLOR_LOSS"),
        (["TRAIN.COEFF.COLOR_LOSS=1", "GAN.B_DCGAN=True"], "TRAIN.COEFF.COLOR_LOSS"),
        (["TRAIN.COEFF.INTERPOLATION=1"], "TRAIN.COEFF.INTERPOLATION"),
        (["TRAIN.COEFF.KL=-1"], "TRAIN.COEFF.KL"),
    ],
)
def test_settings_with_nothing_to_act_on_are_refused(sets, key):
    with pytest.raises(ConfigError, match=re.escape(repr(key))) as exc:
        resolve_config("attngan2", sets=sets)
    _one_line(exc)


def test_family_settings_that_fit_together_load():
    cfg = resolve_config(
        "attngan2",
        sets=["GAN.CONDITIONING=PROJECTION", "TRAIN.COEFF.KL=0", "GAN.B_ATTENTION=False",
              "TRAIN.COEFF.INTERPOLATION=0.5"],
    )  # fmt: skip
    assert cfg.GAN.CONDITIONING == "PROJECTION" and cfg.TRAIN.COEFF.INTERPOLATION == 0.5


def test_training_refuses_an_unsupported_key(tmp_path):
    """The trainer checks before anything is written."""
    from attngan_fast.train.gan_trainer import GanTrainOptions, train_gan

    cfg = resolve_config("attngan2", sets=["TRAIN.NET_G=netG_epoch_600.pth"])
    with pytest.raises(ConfigError, match="TRAIN.NET_G"):
        train_gan(cfg, GanTrainOptions(out_dir=tmp_path / "run", data_dir=tmp_path, device="cpu"))
    assert not (tmp_path / "run").exists()
