"""The model family behind the presets: which networks each config builds, with which keys, and
that the original's switches GAN.B_ATTENTION / GAN.B_DCGAN change the model."""

import pytest
import torch
from test_state_dicts import NEF, expected_d, expected_g, shapes

from attngan_fast.config import PRESETS, config_from_dict, load_config, preset
from attngan_fast.models import G_DCGAN, G_NET, GeneratorSpec, GlobalAttentionGeneral
from attngan_fast.runtime.networks import (
    build_discriminators,
    build_generator,
    build_generator_from_state,
    generator_spec,
    generator_spec_from_state,
    training_objective,
)

FAMILY = ["attngan2", "attngan1", "stackgan2", "gan-int-cls"]


def _built(cfg):
    with torch.device("meta"):
        return build_generator(cfg, init=False), build_discriminators(cfg, init=False)


def _attention_modules(net):
    return [m for m in net.modules() if isinstance(m, GlobalAttentionGeneral)]


@pytest.mark.parametrize("name", ["attngan2", "attngan1"])
def test_attngan_presets_keep_the_original_keys(name):
    cfg = preset(name)
    g, ds = _built(cfg)
    branches = cfg.TREE.BRANCH_NUM
    assert branches == {"attngan2": 3, "attngan1": 2}[name]
    assert shapes(g) == expected_g(cfg.GAN.GF_DIM, cfg.GAN.R_NUM, branches)
    assert [shapes(d) for d in ds] == [expected_d(64 * 2**i, 64) for i in range(branches)]
    assert len(_attention_modules(g)) == branches - 1
    assert training_objective(cfg).lambda_damsm == 5.0
    assert preset("attngan2") == preset("birds")


def test_the_original_g_dcgan_config_builds_g_dcgan():
    """The original's cfg/bird_attnDCGAN2.yml (B_DCGAN: True, R_NUM 0): one image head
    ``img_net`` on the third stage, one D_NET256 without the unconditional head."""
    cfg = config_from_dict({"GAN": {"B_DCGAN": True, "R_NUM": 0}}, preset("birds"))
    g, ds = _built(cfg)
    assert type(g) is G_DCGAN
    want = {k: v for k, v in expected_g(32, 0).items() if not k.startswith("img_net")}
    want["img_net.img.0.weight"] = (3, 32, 3, 3)
    assert shapes(g) == want
    assert list(g.state_dict())[-1] == "img_net.img.0.weight"  # registered last, as the original
    d_keys = {k: v for k, v in expected_d(256, 64).items() if not k.startswith("UNCOND_DNET")}
    assert len(ds) == 1 and shapes(ds[0]) == d_keys
    assert g.image_sizes == [256]


def test_b_attention_false_removes_the_word_attention():
    cfg = config_from_dict({"GAN": {"B_ATTENTION": False}}, preset("birds"))
    g, _ = _built(cfg)
    assert not _attention_modules(g)
    keys = shapes(g)
    assert keys["h_net2.upsample.1.weight"] == (2 * 32, 32, 3, 3)  # upBlock(ngf, ngf): h alone
    assert keys["h_net2.residual.0.block.0.weight"] == (64, 32, 3, 3)  # ResBlock(ngf)


def test_stackgan2_and_gan_int_cls_have_no_attention_and_no_damsm():
    for name in ("stackgan2", "gan-int-cls"):
        cfg = preset(name)
        g, _ = _built(cfg)
        assert not _attention_modules(g), name
        objective = training_objective(cfg)
        assert objective.lambda_damsm == 0 and not objective.needs_image_encoder
    assert training_objective(preset("stackgan2")).colour == 1.0
    assert training_objective(preset("gan-int-cls")).interpolation == 1.0


def test_gan_int_cls_is_one_projected_dcgan_stage():
    cfg = preset("gan-int-cls")
    g, ds = _built(cfg)
    assert type(g) is G_DCGAN and g.image_sizes == [64]
    keys = shapes(g)
    assert keys["text_proj.fc.weight"] == (128, NEF)  # text projected to 128 (Reed et al.)
    assert keys["h_net1.fc.0.weight"][1] == 128 + 100  # cat(c, z)
    assert not any(k.startswith("ca_net") for k in keys)
    (d,) = ds
    assert d.UNCOND_DNET is None  # matching-aware D only
    assert shapes(d)["COND_DNET.text_proj.0.weight"] == (128, NEF)
    assert shapes(d)["COND_DNET.jointConv.0.weight"] == (8 * 64, 8 * 64 + 128, 1, 1)  # 1x1 conv
    assert training_objective(cfg).kl == 0


@pytest.mark.parametrize("name", FAMILY)
def test_spec_round_trips_through_a_state_dict(name):
    cfg = config_from_dict({"GAN": {"GF_DIM": 2, "DF_DIM": 2, "R_NUM": 1}}, preset(name))
    g = build_generator(cfg)
    spec = generator_spec_from_state(g.state_dict())
    want = generator_spec(cfg)
    if want.branch_num == 1:  # residual blocks exist only in later stages
        spec = GeneratorSpec(**{**spec.__dict__, "r_num": want.r_num})
    assert spec == want
    rebuilt = build_generator_from_state(g.state_dict())
    assert type(rebuilt) is type(g)
    for key, value in g.state_dict().items():
        assert torch.equal(rebuilt.state_dict()[key], value), key


def test_per_stage_attention():
    g = G_NET(ngf=2, nef=8, ncf=4, z_dim=3, r_num=1, branch_num=3, attention=(False, True))
    assert [i for i in (2, 3) if hasattr(getattr(g, f"h_net{i}"), "att")] == [3]
    images, atts, _, _ = g(
        torch.randn(2, 3), torch.randn(2, 8), torch.randn(2, 8, 5), torch.zeros(2, 5).bool()
    )
    assert [x.shape[-1] for x in images] == [64, 128, 256]
    assert [a.shape for a in atts] == [(2, 5, 128, 128)]  # stage 3 attends over 128 px features
    assert generator_spec_from_state(g.state_dict()).attention == (False, True)


def test_every_preset_has_help_and_a_shipped_file():
    from attngan_fast.config import PRESET_FILES, PRESET_HELP

    assert set(PRESET_HELP) == set(PRESETS) == set(PRESET_FILES)
    for name in FAMILY:
        assert load_config(PRESET_FILES[name]) == preset(name)
