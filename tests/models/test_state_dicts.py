"""State-dict keys and shapes of the original AttnGAN modules, parameter counts, loading.

The expected keys are generated here from the original module names (``code/model.py`` of
taoxugit/AttnGAN), independently of ``attngan_fast.models``; parameter counts are
derived by arithmetic from the same layer lists.
"""

import pytest
import torch

from attngan_fast.config import preset
from attngan_fast.models import (
    CNN_ENCODER,
    D_NET64,
    D_NET128,
    D_NET256,
    G_NET,
    RNN_ENCODER,
    Inception3,
    load_inception_weights,
)

NEF, NCF, Z_DIM = 256, 100, 100


# --- expected keys, from the original module names ----------------------------------------------


def bn(prefix, c):
    return {f"{prefix}.{k}": (c,) for k in ("weight", "bias", "running_mean", "running_var")} | {
        f"{prefix}.num_batches_tracked": ()
    }


def up_block(prefix, cin, cout):  # [Upsample, conv3x3(cin, 2cout), BN(2cout), GLU]
    return {f"{prefix}.1.weight": (2 * cout, cin, 3, 3)} | bn(f"{prefix}.2", 2 * cout)


def res_block(prefix, c):  # block = [conv3x3(c, 2c), BN, GLU, conv3x3(c, c), BN]
    return (
        {f"{prefix}.block.0.weight": (2 * c, c, 3, 3), f"{prefix}.block.3.weight": (c, c, 3, 3)}
        | bn(f"{prefix}.block.1", 2 * c)
        | bn(f"{prefix}.block.4", c)
    )


def expected_g(ngf, r_num, branches=3):
    keys = {"ca_net.fc.weight": (4 * NCF, NEF), "ca_net.fc.bias": (4 * NCF,)}
    g16 = 16 * ngf
    keys |= {"h_net1.fc.0.weight": (g16 * 32, NCF + Z_DIM)} | bn("h_net1.fc.1", g16 * 32)
    for i in range(4):
        keys |= up_block(f"h_net1.upsample{i + 1}", g16 >> i, g16 >> (i + 1))
    keys["img_net1.img.0.weight"] = (3, ngf, 3, 3)
    for s in range(2, branches + 1):
        keys[f"h_net{s}.att.conv_context.weight"] = (ngf, NEF, 1, 1)
        for r in range(r_num):
            keys |= res_block(f"h_net{s}.residual.{r}", 2 * ngf)
        keys |= up_block(f"h_net{s}.upsample", 2 * ngf, ngf)
        keys[f"img_net{s}.img.0.weight"] = (3, ngf, 3, 3)
    return keys


def conv_bn(prefix, cin, cout, k):  # [Conv(no bias), BN, LeakyReLU]
    return {f"{prefix}.0.weight": (cout, cin, k, k)} | bn(f"{prefix}.1", cout)


def expected_d(size, ndf):
    keys = {"img_code_s16.0.weight": (ndf, 3, 4, 4)}
    for idx, mult in zip((2, 5, 8), (1, 2, 4)):  # Conv(m ndf -> 2m ndf), BN, LeakyReLU
        keys[f"img_code_s16.{idx}.weight"] = (2 * mult * ndf, mult * ndf, 4, 4)
        keys |= bn(f"img_code_s16.{idx + 1}", 2 * mult * ndf)
    if size == 128:
        keys |= conv_bn("img_code_s32", 8 * ndf, 16 * ndf, 4)
        keys |= conv_bn("img_code_s32_1", 16 * ndf, 8 * ndf, 3)
    if size == 256:
        keys |= conv_bn("img_code_s32", 8 * ndf, 16 * ndf, 4)
        keys |= conv_bn("img_code_s64", 16 * ndf, 32 * ndf, 4)
        keys |= conv_bn("img_code_s64_1", 32 * ndf, 16 * ndf, 3)
        keys |= conv_bn("img_code_s64_2", 16 * ndf, 8 * ndf, 3)
    for head in ("UNCOND_DNET", "COND_DNET"):
        keys[f"{head}.outlogits.0.weight"] = (1, 8 * ndf, 4, 4)
        keys[f"{head}.outlogits.0.bias"] = (1,)
    keys |= conv_bn("COND_DNET.jointConv", 8 * ndf + NEF, 8 * ndf, 3)
    return keys


def shapes(module):
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def meta(factory, *args, **kwargs):
    with torch.device("meta"):
        return factory(*args, **kwargs)


def uninitialised(factory, *args, **kwargs):
    """On the CPU without running the (slow) initialisation: for loading weights into."""
    return meta(factory, *args, **kwargs).to_empty(device="cpu")


CONFIGS = {"birds": (32, 64, 2), "coco": (48, 96, 3)}  # ngf, ndf, r_num of the original ymls


@pytest.mark.parametrize("name", list(CONFIGS))
def test_generator_keys_and_shapes(name):
    ngf, _, r_num = CONFIGS[name]
    cfg = preset(name)
    assert (cfg.GAN.GF_DIM, cfg.GAN.R_NUM) == (ngf, r_num)
    g = meta(G_NET, ngf=ngf, r_num=r_num, branch_num=3)
    assert shapes(g) == expected_g(ngf, r_num)
    for branches in (1, 2):
        assert shapes(meta(G_NET, ngf=ngf, r_num=r_num, branch_num=branches)) == expected_g(
            ngf, r_num, branches
        )


@pytest.mark.parametrize("name", list(CONFIGS))
@pytest.mark.parametrize("size,d_net", [(64, D_NET64), (128, D_NET128), (256, D_NET256)])
def test_discriminator_keys_and_shapes(name, size, d_net):
    ndf = CONFIGS[name][1]
    assert shapes(meta(d_net, ndf)) == expected_d(size, ndf)


# --- parameter counts, by arithmetic ----------------------------------------------------------


def n_up(cin, cout):
    return cin * 2 * cout * 9 + 2 * 2 * cout


def n_res(c):
    return c * 2 * c * 9 + 2 * 2 * c + c * c * 9 + 2 * c


def n_g(ngf, r_num):
    g16 = 16 * ngf
    ca = NEF * 4 * NCF + 4 * NCF
    stage1 = (NCF + Z_DIM) * g16 * 32 + 2 * g16 * 32
    stage1 += n_up(g16, g16 // 2) + n_up(g16 // 2, g16 // 4) + n_up(g16 // 4, g16 // 8)
    stage1 += n_up(g16 // 8, g16 // 16) + ngf * 3 * 9
    stage = NEF * ngf + r_num * n_res(2 * ngf) + n_up(2 * ngf, ngf) + ngf * 3 * 9
    return ca + stage1 + 2 * stage


def n_d(size, ndf):
    n = 3 * ndf * 16 + (ndf * 2 * ndf + 2 * ndf * 4 * ndf + 4 * ndf * 8 * ndf) * 16
    n += 2 * (2 * ndf + 4 * ndf + 8 * ndf)
    if size == 128:
        n += 8 * ndf * 16 * ndf * 16 + 2 * 16 * ndf + 16 * ndf * 8 * ndf * 9 + 2 * 8 * ndf
    if size == 256:
        n += 8 * ndf * 16 * ndf * 16 + 2 * 16 * ndf + 16 * ndf * 32 * ndf * 16 + 2 * 32 * ndf
        n += 32 * ndf * 16 * ndf * 9 + 2 * 16 * ndf + 16 * ndf * 8 * ndf * 9 + 2 * 8 * ndf
    heads = 2 * (8 * ndf * 16 + 1) + (8 * ndf + NEF) * 8 * ndf * 9 + 2 * 8 * ndf
    return n + heads


def n_params(module):
    return sum(p.numel() for p in module.parameters())


def test_count_formulas_pinned():
    # Worked by hand for birds: CA 102,800; stage 1 6,445,792; stages 2-3 268,000 each.
    assert n_g(32, 2) == 7_084_592
    assert n_d(64, 64) == 6_313_730
    assert n_g(48, 3) == 13_811_456
    assert (n_d(128, 64), n_d(256, 64)) == (19_424_002, 71_858_946)  # D_NET256 ~72 M
    assert (n_d(64, 96), n_d(128, 96), n_d(256, 96)) == (13_304_450, 42_800_258, 160_774_274)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_parameter_counts(name):
    ngf, ndf, r_num = CONFIGS[name]
    assert n_params(meta(G_NET, ngf=ngf, r_num=r_num)) == n_g(ngf, r_num)
    for size, d_net in ((64, D_NET64), (128, D_NET128), (256, D_NET256)):
        assert n_params(meta(d_net, ndf)) == n_d(size, ndf)


# --- loading original-style state dicts ----------------------------------------------------------


def random_state_dict(expected, old_style):
    """A state dict with the original key names; ``old_style``: as PyTorch 0.3 saved it
    (no num_batches_tracked, a plain dict without ``_metadata``)."""
    sd = {}
    for key, shape in expected.items():
        if key.endswith("num_batches_tracked"):
            if not old_style:
                sd[key] = torch.tensor(7)
        elif key.endswith("running_var"):
            sd[key] = torch.rand(shape) + 0.5
        else:
            sd[key] = torch.randn(shape)
    return sd


@pytest.mark.parametrize("old_style", [False, True])
def test_load_original_generator_and_discriminator(old_style):
    g = G_NET(ngf=4, r_num=2)
    sd = random_state_dict(expected_g(4, 2), old_style)
    g.load_state_dict(sd, strict=True)
    for key, value in g.state_dict().items():
        if key.endswith("num_batches_tracked"):
            assert int(value) == (0 if old_style else 7)
        else:
            assert torch.equal(value, sd[key]), key
    d = D_NET256(2)
    sd = random_state_dict(expected_d(256, 2), old_style)
    d.load_state_dict(sd, strict=True)
    assert torch.equal(d.COND_DNET.jointConv[0].weight, sd["COND_DNET.jointConv.0.weight"])


def test_text_encoder_keys():
    enc = meta(RNN_ENCODER, 5450, nhidden=256)
    h, i = 128, 300
    expected = {"encoder.weight": (5450, 300)}
    for suffix in ("", "_reverse"):
        expected |= {
            f"rnn.weight_ih_l0{suffix}": (4 * h, i),
            f"rnn.weight_hh_l0{suffix}": (4 * h, h),
            f"rnn.bias_ih_l0{suffix}": (4 * h,),
            f"rnn.bias_hh_l0{suffix}": (4 * h,),
        }
    assert shapes(enc) == expected


# --- Inception-v3 (torchvision's names) and the DAMSM image encoder -----------------------------

BRANCHES = {
    "A": "branch1x1 branch5x5_1 branch5x5_2 branch3x3dbl_1 branch3x3dbl_2 branch3x3dbl_3 "
    "branch_pool",
    "B": "branch3x3 branch3x3dbl_1 branch3x3dbl_2 branch3x3dbl_3",
    "C": "branch1x1 branch7x7_1 branch7x7_2 branch7x7_3 branch7x7dbl_1 branch7x7dbl_2 "
    "branch7x7dbl_3 branch7x7dbl_4 branch7x7dbl_5 branch_pool",
    "D": "branch3x3_1 branch3x3_2 branch7x7x3_1 branch7x7x3_2 branch7x7x3_3 branch7x7x3_4",
    "E": "branch1x1 branch3x3_1 branch3x3_2a branch3x3_2b branch3x3dbl_1 branch3x3dbl_2 "
    "branch3x3dbl_3a branch3x3dbl_3b branch_pool",
}
LAYOUT = (
    [(n, None) for n in ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "Conv2d_3b_1x1")]
    + [("Conv2d_4a_3x3", None), ("Mixed_5b", "A"), ("Mixed_5c", "A"), ("Mixed_5d", "A")]
    + [("Mixed_6a", "B")] + [(f"Mixed_6{c}", "C") for c in "bcde"]
    + [("Mixed_7a", "D"), ("Mixed_7b", "E"), ("Mixed_7c", "E")]
)  # fmt: skip


def basic_conv_keys(prefix):
    keys = [f"{prefix}.conv.weight"]
    return keys + [f"{prefix}.bn.{k}" for k in ("weight", "bias", "running_mean", "running_var",
                                                 "num_batches_tracked")]  # fmt: skip


def inception_trunk_keys():
    keys = []
    for name, kind in LAYOUT:
        paths = [name] if kind is None else [f"{name}.{b}" for b in BRANCHES[kind].split()]
        for path in paths:
            keys += basic_conv_keys(path)
    return keys


# torchvision documents 27,161,264 parameters for inception_v3 (with the auxiliary classifier).
AUX = (768 * 128 + 2 * 128) + (128 * 768 * 25 + 2 * 768) + (768 * 1000 + 1000)
FC = 2048 * 1000 + 1000


def test_inception_keys_and_count():
    net = meta(Inception3)
    keys = list(net.state_dict())
    assert keys == inception_trunk_keys() + ["fc.weight", "fc.bias"]
    assert len(inception_trunk_keys()) == 94 * 6
    assert n_params(net) == 27_161_264 - AUX
    sd = shapes(net)
    assert sd["Conv2d_1a_3x3.conv.weight"] == (32, 3, 3, 3)
    assert sd["Mixed_6e.branch7x7_2.conv.weight"] == (192, 192, 1, 7)
    assert sd["Mixed_7b.branch3x3dbl_3b.conv.weight"] == (384, 384, 3, 1)
    assert sd["Mixed_7c.branch_pool.conv.weight"] == (192, 2048, 1, 1)


def test_image_encoder_keys_and_count():
    enc = meta(CNN_ENCODER, 256)
    expected = inception_trunk_keys() + ["emb_features.weight", "emb_cnn_code.weight",
                                         "emb_cnn_code.bias"]  # fmt: skip
    assert list(enc.state_dict()) == expected
    assert n_params(enc) == 27_161_264 - AUX - FC + 768 * 256 + 2048 * 256 + 256
    assert shapes(enc)["emb_features.weight"] == (256, 768, 1, 1)
    trainable = {n for n, p in enc.named_parameters() if p.requires_grad}
    assert trainable == {"emb_features.weight", "emb_cnn_code.weight", "emb_cnn_code.bias"}


def fake_inception_state_dict(reference, with_aux, old_style):
    """A torchvision-style inception_v3 state dict (random values) for ``reference``'s shapes."""
    sd = {
        k: torch.randn(v.shape) if v.is_floating_point() else torch.tensor(3)
        for k, v in reference.state_dict().items()
        if not (old_style and k.endswith("num_batches_tracked"))
    }
    if with_aux:
        sd["AuxLogits.conv0.conv.weight"] = torch.randn(128, 768, 1, 1)
        sd["AuxLogits.fc.weight"] = torch.randn(1000, 768)
    return sd


@pytest.mark.parametrize("old_style", [False, True])
def test_load_torchvision_inception_weights(old_style):
    net = uninitialised(Inception3)
    sd = fake_inception_state_dict(net, with_aux=True, old_style=old_style)
    load_inception_weights(net, sd)
    assert torch.equal(net.Mixed_6e.branch7x7_2.conv.weight, sd["Mixed_6e.branch7x7_2.conv.weight"])
    assert torch.equal(net.fc.weight, sd["fc.weight"])
    enc = uninitialised(CNN_ENCODER)
    emb = enc.emb_features.weight.clone()
    load_inception_weights(enc, sd)  # fc and AuxLogits skipped, projections untouched
    key = "Mixed_7c.branch1x1.bn.running_var"
    assert torch.equal(enc.get_buffer(key), sd[key])
    assert torch.equal(enc.emb_features.weight, emb)
    del sd["Mixed_5b.branch_pool.conv.weight"]
    with pytest.raises(KeyError, match="Mixed_5b.branch_pool.conv.weight"):
        load_inception_weights(enc, sd)


def test_load_released_image_encoder_style():
    """image_encoder200.pth: the whole CNN_ENCODER as PyTorch 0.3 saved it (strict load)."""
    enc = uninitialised(CNN_ENCODER)
    sd = {
        k: torch.rand(v.shape) + 0.5
        for k, v in enc.state_dict().items()
        if not k.endswith("num_batches_tracked")
    }
    enc.load_state_dict(sd, strict=True)
    assert torch.equal(enc.emb_cnn_code.bias, sd["emb_cnn_code.bias"])
