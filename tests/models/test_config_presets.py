"""Config presets (the original's values), the shipped yml files, the original-style yml loader."""

import re
from pathlib import Path

import pytest

from attngan_fast.config import (
    PRESET_FILES,
    PRESETS,
    Config,
    ConfigError,
    config_from_dict,
    load_config,
    preset,
)
from attngan_fast.errors import UsageError

# The original's values (code/cfg/*.yml and DAMSM/*.yml of taoxugit/AttnGAN), written out
# independently of attngan_fast/config.py.
ORIGINAL = {
    "birds": dict(branch=3, base=64, batch=20, epochs=600, ngf=32, ndf=64, r_num=2, lam=5.0,
                  captions=10, words=18),
    "coco": dict(branch=3, base=64, batch=14, epochs=120, ngf=48, ndf=96, r_num=3, lam=50.0,
                 captions=5, words=12),
    "damsm_birds": dict(branch=1, base=299, batch=48, epochs=600, captions=10, words=18),
    "damsm_coco": dict(branch=1, base=299, batch=48, epochs=600, captions=5, words=15),
}  # fmt: skip


@pytest.mark.parametrize("name", list(ORIGINAL))
def test_preset_values_match_the_spec(name):
    cfg, spec = preset(name), ORIGINAL[name]
    assert cfg.TREE.BRANCH_NUM == spec["branch"]
    assert cfg.TREE.BASE_SIZE == spec["base"]
    assert cfg.TRAIN.BATCH_SIZE == spec["batch"]
    assert cfg.TRAIN.MAX_EPOCH == spec["epochs"]
    assert cfg.TEXT.CAPTIONS_PER_IMAGE == spec["captions"]
    assert cfg.TEXT.WORDS_NUM == spec["words"]
    assert cfg.TEXT.EMBEDDING_DIM == 256
    assert (cfg.TRAIN.SMOOTH.GAMMA1, cfg.TRAIN.SMOOTH.GAMMA2, cfg.TRAIN.SMOOTH.GAMMA3) == (4, 5, 10)
    assert cfg.TRAIN.RNN_GRAD_CLIP == 0.25
    assert cfg.RNN_TYPE == "LSTM"
    if name.startswith("damsm"):
        assert cfg.TRAIN.ENCODER_LR == 2e-3
    else:
        assert cfg.GAN.GF_DIM == spec["ngf"] and cfg.GAN.DF_DIM == spec["ndf"]
        assert cfg.GAN.R_NUM == spec["r_num"]
        assert cfg.TRAIN.SMOOTH.LAMBDA == spec["lam"]
        assert cfg.TRAIN.GENERATOR_LR == cfg.TRAIN.DISCRIMINATOR_LR == 2e-4
        assert (cfg.GAN.Z_DIM, cfg.GAN.CONDITION_DIM) == (100, 100)


def test_defaults_are_the_original_defaults():
    cfg = Config()
    assert (cfg.GAN.GF_DIM, cfg.GAN.DF_DIM, cfg.TRAIN.BATCH_SIZE) == (128, 64, 64)
    assert (cfg.TRAIN.SMOOTH.GAMMA1, cfg.TRAIN.SMOOTH.LAMBDA, cfg.WORKERS) == (5.0, 1.0, 6)


@pytest.mark.parametrize("name", list(PRESET_FILES))
def test_shipped_yml_equals_preset(name):
    stem = Path(PRESET_FILES[name]).stem
    assert load_config(stem) == preset(name)
    assert load_config(f"{stem}.yml") == preset(name)


def test_presets_are_independent_copies():
    a = preset("birds")
    a.TRAIN.SMOOTH.LAMBDA = 123.0
    assert preset("birds").TRAIN.SMOOTH.LAMBDA == 5.0
    assert PRESETS["birds"]["TRAIN"]["SMOOTH"]["LAMBDA"] == 5.0


def test_original_style_yml(tmp_path):
    path = tmp_path / "eval_bird.yml"
    path.write_text(
        "CONFIG_NAME: 'attn2'\nDATASET_NAME: 'birds'\nGPU_ID: 3\n"
        "TREE:\n    BRANCH_NUM: 3\n"
        "TRAIN:\n    FLAG: False\n    NET_G: '../models/bird_AttnGAN2.pth'\n    B_NET_D: False\n"
        "    BATCH_SIZE: 100\n    NET_E: '../DAMSMencoders/bird/text_encoder200.pth'\n"
        "    SMOOTH:\n        GAMMA1: 4  # an int for a float key is accepted\n"
        "GAN:\n    DF_DIM: 64\n    GF_DIM: 32\n    Z_DIM: 100\n    R_NUM: 2\n"
        "TEXT:\n    EMBEDDING_DIM: 256\n    CAPTIONS_PER_IMAGE: 10\n    WORDS_NUM: 25\n"
    )
    cfg = load_config(path)
    assert cfg.GPU_ID == 3 and cfg.TRAIN.FLAG is False and cfg.TRAIN.BATCH_SIZE == 100
    assert cfg.TRAIN.SMOOTH.GAMMA1 == 4.0 and isinstance(cfg.TRAIN.SMOOTH.GAMMA1, float)
    assert cfg.TEXT.WORDS_NUM == 25
    assert cfg.TRAIN.SMOOTH.GAMMA2 == 5.0  # untouched default
    over = load_config(path, base=preset("coco"))
    assert over.TRAIN.SMOOTH.LAMBDA == 50.0 and over.GAN.GF_DIM == 32


def test_unknown_key_is_named(tmp_path):
    path = tmp_path / "bad.yml"
    path.write_text("TRAIN:\n    SMOOTH:\n        GAMMA4: 1.0\n")
    with pytest.raises(ConfigError, match=r"TRAIN\.SMOOTH\.GAMMA4"):
        load_config(path)
    with pytest.raises(ConfigError, match="'NOPE'"):
        config_from_dict({"NOPE": 1})


def test_wrong_type_is_named():
    with pytest.raises(ConfigError, match=r"GAN\.GF_DIM"):
        config_from_dict({"GAN": {"GF_DIM": "32"}})
    with pytest.raises(ConfigError, match=r"TRAIN\.FLAG"):
        config_from_dict({"TRAIN": {"FLAG": 1}})
    with pytest.raises(ConfigError, match="TREE"):
        config_from_dict({"TREE": 3})


def test_missing_file_and_unknown_preset():
    with pytest.raises(FileNotFoundError):
        load_config("no_such_config")
    with pytest.raises(ConfigError, match="flowers"):
        preset("flowers")


@pytest.mark.parametrize(
    "values, key",
    [
        ({"GAN": {"GF_DIM": 0}}, "GAN.GF_DIM"),
        ({"GAN": {"DF_DIM": 100000}}, "GAN.DF_DIM"),
        ({"TREE": {"BRANCH_NUM": 4}}, "TREE.BRANCH_NUM"),
        ({"TRAIN": {"BATCH_SIZE": -1}}, "TRAIN.BATCH_SIZE"),
        ({"TRAIN": {"MAX_EPOCH": 0}}, "TRAIN.MAX_EPOCH"),
        ({"TRAIN": {"GENERATOR_LR": 0.0}}, "TRAIN.GENERATOR_LR"),
        ({"TRAIN": {"SMOOTH": {"GAMMA1": float("nan")}}}, "TRAIN.SMOOTH.GAMMA1"),
        ({"TEXT": {"EMBEDDING_DIM": 33}}, "TEXT.EMBEDDING_DIM"),
        ({"TEXT": {"WORDS_NUM": 0}}, "TEXT.WORDS_NUM"),
    ],
)
def test_values_out_of_range_name_the_key(values, key):
    """Caught where the config is made, not as an error deep inside an op."""
    with pytest.raises(ConfigError, match=re.escape(f"'{key}' must be")) as exc:
        config_from_dict(values)
    assert isinstance(exc.value, UsageError)


def test_out_of_range_in_a_yml_names_the_file(tmp_path):
    path = tmp_path / "my.yml"
    path.write_text("TRAIN:\n  BATCH_SIZE: 0\n")
    with pytest.raises(ConfigError, match=re.escape(str(path)) + ".*TRAIN.BATCH_SIZE"):
        load_config(path)
