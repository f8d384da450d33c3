"""State-dict keys and shapes of the original AttnGAN modules, parameter counts, loading.

The expected keys and shapes are the original's module layouts, written as key -> shape lists in
``tests/fixtures/make_original_fixtures.py`` (from ``code/model.py`` of taoxugit/AttnGAN and
torchvision's inception_v3), independently of ``attngan_fast.models``; parameter counts are
derived by arithmetic from the layer lists. Files in the original format made from those lists
load through the library's loaders with every key used (strict), and the generator loaded from
one computes what the original's forward computes (``tests/fixtures/original_forward.py``).
"""

import math

import pytest
import torch
from fixtures import make_original_fixtures as orig
from fixtures.original_forward import g_net_forward

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
from attngan_fast.runtime.networks import load_encoders, load_generator, load_text_encoder

NEF, NCF, Z_DIM = 256, 100, 100


def expected_g(ngf, r_num, branches=3):
    return orig.g_net(ngf, NEF, NCF, Z_DIM, r_num, branches)


def expected_d(size, ndf):
    return orig.d_net(size, ndf, NEF)


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
    return orig.random_state_dict(expected, seed=0, old_style=old_style)


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
    assert shapes(enc) == orig.rnn_encoder(5450, ninput=300, nhidden=256)
    assert list(enc.state_dict()) == list(orig.rnn_encoder(5450, ninput=300, nhidden=256))


# --- Inception-v3 (torchvision's names) and the DAMSM image encoder -----------------------------

# torchvision documents 27,161,264 parameters for inception_v3 (with the auxiliary classifier).
AUX = (768 * 128 + 2 * 128) + (128 * 768 * 25 + 2 * 768) + (768 * 1000 + 1000)
FC = 2048 * 1000 + 1000


def layout_params(layout):
    buffers = ("running_mean", "running_var", "num_batches_tracked")
    return sum(math.prod(s) for k, s in layout.items() if not k.endswith(buffers))


def test_inception_keys_and_count():
    assert layout_params(orig.inception_v3()) == 27_161_264  # the layout is torchvision's
    assert len(orig.inception_trunk()) == 94 * 6
    net = meta(Inception3)
    assert shapes(net) == orig.inception_v3(aux_logits=False)
    assert list(net.state_dict()) == list(orig.inception_v3(aux_logits=False))
    assert n_params(net) == 27_161_264 - AUX


def test_image_encoder_keys_and_count():
    enc = meta(CNN_ENCODER, 256)
    assert shapes(enc) == orig.cnn_encoder(256)
    assert list(enc.state_dict()) == list(orig.cnn_encoder(256))
    assert n_params(enc) == 27_161_264 - AUX - FC + 768 * 256 + 2048 * 256 + 256
    assert shapes(enc)["emb_features.weight"] == (256, 768, 1, 1)
    trainable = {n for n, p in enc.named_parameters() if p.requires_grad}
    assert trainable == {"emb_features.weight", "emb_cnn_code.weight", "emb_cnn_code.bias"}


@pytest.mark.parametrize("old_style", [False, True])
def test_load_torchvision_inception_weights(old_style):
    net = uninitialised(Inception3)
    sd = orig.random_state_dict(orig.inception_v3(), old_style=old_style)  # with AuxLogits
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
    sd = orig.random_state_dict(orig.cnn_encoder(256), old_style=True)
    enc.load_state_dict(sd, strict=True)
    assert torch.equal(enc.emb_cnn_code.bias, sd["emb_cnn_code.bias"])


# --- files in the original format, through the library's loaders --------------------------------


@pytest.fixture(scope="module", params=[True, False], ids=["pytorch0.3", "num_batches_tracked"])
def original_files(request, tmp_path_factory):
    return orig.write_original_fixtures(tmp_path_factory.mktemp("orig"), old_style=request.param)


def _same_tensors(module, path, prefix=""):
    """Every tensor of the file is in ``module`` with its value, and nothing else is (but the
    num_batches_tracked buffers of a file saved without them)."""
    saved = torch.load(path, weights_only=True)
    got = module.state_dict()
    extra = {k for k in got if k not in saved and not k.endswith("num_batches_tracked")}
    assert not extra and set(saved) <= set(got)
    for key, value in saved.items():
        assert torch.equal(got[key], value), key


def test_original_generator_file_loads_and_computes_what_the_original_computes(original_files):
    netG = load_generator(original_files["netG"])
    assert netG.branch_num == 3 and netG.h_net1.in_dim == 6 + 8
    _same_tensors(netG, original_files["netG"])
    state = netG.state_dict()
    gen = torch.Generator().manual_seed(0)
    z, sent = torch.randn(3, 8, generator=gen), torch.randn(3, 16, generator=gen)
    words = torch.randn(3, 16, 5, generator=gen)
    mask = torch.tensor([[0, 0, 0, 0, 0], [0, 0, 0, 1, 1], [0, 1, 1, 1, 1]], dtype=torch.bool)
    torch.manual_seed(4)
    eps = torch.randn(3, 6)  # what CA_NET draws next after the same seed
    torch.manual_seed(4)
    with torch.no_grad():
        images, attention, _, _ = netG(z, sent, words, mask)
    want_images, want_attention = g_net_forward(state, z, eps, sent, words, mask)
    assert [tuple(x.shape) for x in images] == [(3, 3, 64, 64), (3, 3, 128, 128), (3, 3, 256, 256)]
    for got, want in zip(images + attention, want_images + want_attention, strict=True):
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def test_original_discriminator_and_text_encoder_files_load(original_files):
    for i, d_net in enumerate((D_NET64, D_NET128, D_NET256)):
        netD = d_net(2, 16)
        state = torch.load(original_files[f"netD{i}"], weights_only=True)
        result = netD.load_state_dict(state, strict=False)  # strict but for old files' buffers
        assert not result.unexpected_keys
        assert all(k.endswith("num_batches_tracked") for k in result.missing_keys)
        _same_tensors(netD, original_files[f"netD{i}"])
    text = load_text_encoder(original_files["text_encoder"])
    assert (text.ntoken, text.ninput, text.nhidden) == (len(orig.WORDS), 300, 8)
    _same_tensors(text, original_files["text_encoder"])


def test_original_image_encoder_file_loads_with_its_text_encoder(tmp_path):
    """image_encoder200.pth (the whole CNN_ENCODER, Inception-sized) beside text_encoder200.pth:
    the pair loads, the image encoder's kind and size read from the files' shapes."""
    files = orig.write_original_fixtures(tmp_path, old_style=True, image_encoder=True)
    text, image, spec = load_encoders(files["text_encoder"])
    assert (spec.image_encoder, spec.nef, spec.n_words) == ("inception", 16, len(orig.WORDS))
    _same_tensors(image, files["image_encoder"])
    _same_tensors(text, files["text_encoder"])


@pytest.mark.parametrize("name", ["netG", "text_encoder"])
def test_dataparallel_prefixed_files_load(original_files, tmp_path, name):
    """Forks of the original that saved ``nn.DataParallel(net).state_dict()`` (``module.``
    before every key; the original itself saves the plain module) load the same."""
    state = torch.load(original_files[name], weights_only=True)
    torch.save({f"module.{k}": v for k, v in state.items()}, tmp_path / "wrapped.pth")
    load = load_generator if name == "netG" else load_text_encoder
    _same_tensors(load(tmp_path / "wrapped.pth"), original_files[name])
