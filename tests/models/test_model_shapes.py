"""Output shapes of every network for the birds and coco configurations (batch 2, CPU)."""

import pytest
import torch

from attngan_fast.config import preset
from attngan_fast.models import (
    CNN_ENCODER,
    D_NET256,
    G_NET,
    RNN_ENCODER,
    Inception3,
    SmallImageEncoder,
    init_weights,
)
from attngan_fast.runtime.networks import build_discriminators, build_generator

B = 2


def text_inputs(words_num, nef=256):
    words = torch.randn(B, nef, words_num)
    mask = torch.zeros(B, words_num, dtype=torch.bool)
    mask[1, words_num // 2 :] = True
    return torch.randn(B, 100), torch.randn(B, nef), words, mask


@pytest.mark.parametrize("name", ["birds", "coco"])
def test_generator_stages(name):
    cfg = preset(name)
    g = build_generator(cfg)
    t = cfg.TEXT.WORDS_NUM
    with torch.no_grad():
        imgs, att_maps, mu, logvar = g(*text_inputs(t))
    assert [tuple(i.shape) for i in imgs] == [(B, 3, s, s) for s in (64, 128, 256)]
    assert [tuple(a.shape) for a in att_maps] == [(B, t, 64, 64), (B, t, 128, 128)]
    assert mu.shape == logvar.shape == (B, 100)
    assert all(i.abs().max() <= 1 for i in imgs)
    for a in att_maps:  # attention sums to 1 over the words; padded words get none
        torch.testing.assert_close(a.sum(1), torch.ones(B, *a.shape[2:]))
        assert a[1, t // 2 :].abs().max() == 0


def test_generator_fewer_branches_and_no_attn():
    cfg = preset("birds")
    cfg.GAN.GF_DIM = 4
    with torch.no_grad():
        imgs, att_maps, _, _ = build_generator(cfg).eval()(*text_inputs(5), need_attn=False)
    assert len(imgs) == 3 and att_maps == []
    cfg.TREE.BRANCH_NUM = 1
    with torch.no_grad():
        imgs, att_maps, _, _ = build_generator(cfg)(*text_inputs(5))
    assert [tuple(i.shape) for i in imgs] == [(B, 3, 64, 64)] and att_maps == []


@pytest.mark.parametrize("name", ["birds", "coco"])
def test_discriminators(name):
    cfg = preset(name)
    ndf = cfg.GAN.DF_DIM
    nets = constant_weights(lambda: build_discriminators(cfg, init=False)).train()
    sent = torch.randn(B, 256)
    assert isinstance(nets[2], D_NET256)
    with torch.no_grad():
        for net, size in zip(nets, (64, 128, 256)):
            features = net(torch.randn(B, 3, size, size))
            assert features.shape == (B, 8 * ndf, 4, 4)
            assert net.COND_DNET(features, sent).shape == (B,)
            assert net.UNCOND_DNET(features).shape == (B,)


def constant_weights(factory):
    """The module with every parameter and buffer 0.01 (skips the slow random initialisation)."""
    with torch.device("meta"):
        net = factory()
    net = net.to_empty(device="cpu")
    for t in [*net.parameters(), *net.buffers()]:
        torch.nn.init.constant_(t, 0.01)
    return net.eval()


def test_cnn_encoder_and_inception():
    enc = constant_weights(CNN_ENCODER)
    with torch.no_grad():  # any input size: resized to 299 x 299 inside
        local, code = enc(torch.rand(B, 3, 64, 64) * 2 - 1)
    assert local.shape == (B, 256, 17, 17) and code.shape == (B, 256)
    net = constant_weights(Inception3)
    with torch.no_grad():  # the smallest input Inception-v3 takes (pool3 is a global average)
        feats = net.features(torch.randn(1, 3, 75, 75))
    assert feats.pool3.shape == (1, 2048) and feats.logits.shape == (1, 1000)
    torch.testing.assert_close(net.fc(feats.pool3), feats.logits)


@pytest.mark.parametrize("size,regions", [(64, 8), (128, 16)])
def test_small_image_encoder(size, regions):
    enc = SmallImageEncoder(nef=256, ndf=16, image_size=size)
    for input_size in (64, 128, 256):
        local, code = enc(torch.randn(B, 3, input_size, input_size))
        assert local.shape == (B, 256, regions, regions) and code.shape == (B, 256)


@pytest.mark.parametrize("input_size", [128, 96])  # a whole factor (average pooling) and not
def test_small_image_encoder_downsamples_by_area(input_size):
    enc = SmallImageEncoder(nef=16, ndf=4, image_size=64).eval()
    x = torch.randn(2, 3, input_size, input_size)
    with torch.no_grad():
        got = enc(x)
        want = enc(torch.nn.functional.interpolate(x, size=(64, 64), mode="area"))
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=0, atol=0)


def test_text_encoder_shapes_and_unsorted_batch():
    enc = RNN_ENCODER(50, nhidden=256).eval()
    lens = torch.tensor([4, 9, 6])  # not sorted: works without enforce_sorted
    caps = torch.randint(1, 50, (3, 12))
    for i, n in enumerate(lens):
        caps[i, n:] = 0
    words, sent = enc(caps, lens)
    assert words.shape == (3, 256, 9) and sent.shape == (3, 256)
    assert words[0, :, 4:].abs().max() == 0 and words[2, :, 6:].abs().max() == 0
    for i, n in enumerate(lens):  # the same as encoding each caption alone
        w_i, s_i = enc(caps[i : i + 1, :n], lens[i : i + 1], enc.init_hidden(1))
        torch.testing.assert_close(words[i, :, :n], w_i[0])
        torch.testing.assert_close(sent[i], s_i[0])
    # sent_emb = final forward state and final backward state (at the first word)
    torch.testing.assert_close(sent[:, :128], words[torch.arange(3), :128, lens - 1])
    torch.testing.assert_close(sent[:, 128:], words[:, 128:, 0])


def test_text_encoder_gru_and_init():
    enc = RNN_ENCODER(30, nhidden=64, rnn_type="GRU")
    assert enc.encoder.weight.abs().max() <= 0.1
    words, sent = enc(torch.randint(1, 30, (2, 5)), torch.tensor([5, 3]), enc.init_hidden(2))
    assert words.shape == (2, 64, 5) and sent.shape == (2, 64)
    with pytest.raises(ValueError, match="rnn_type"):
        RNN_ENCODER(30, rnn_type="RNN")


def test_generator_autocast_bf16_backward():
    g = G_NET(ngf=4, r_num=1, branch_num=3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        imgs, att_maps, mu, _ = g(*text_inputs(5))
        loss = sum(i.float().mean() for i in imgs) + att_maps[1].float().mean() + mu.float().sum()
    assert imgs[2].dtype == torch.bfloat16 and att_maps[1].shape == (B, 5, 128, 128)
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in g.parameters())


def test_weights_init():
    g = init_weights(G_NET(ngf=4, r_num=1, branch_num=2))
    w = g.h_net2.upsample[1].weight.flatten(1)  # 8 x 72: orthogonal rows
    torch.testing.assert_close(w @ w.t(), torch.eye(8), rtol=0, atol=1e-5)
    fc = g.ca_net.fc
    torch.testing.assert_close(fc.weight.t() @ fc.weight, torch.eye(256), rtol=0, atol=1e-5)
    assert fc.bias.abs().max() == 0
    bn = g.h_net1.fc[1]
    assert bn.bias.abs().max() == 0 and abs(bn.weight.mean() - 1) < 0.01
    assert 0.015 < bn.weight.std() < 0.025


def test_d_heads_run_in_fp32_under_cpu_bf16_autocast():
    """oneDNN's bf16 kernels are slow on the 4 x 4 head maps: the heads compute in fp32 there."""
    from attngan_fast.models.discriminator import D_GET_LOGITS

    torch.manual_seed(0)
    head = D_GET_LOGITS(4, nef=8, bcondition=True)
    h, sent = torch.randn(3, 32, 4, 4), torch.randn(3, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = head(h.bfloat16(), sent)
    assert logits.dtype == torch.float32
    torch.testing.assert_close(logits, head(h.bfloat16().float(), sent))
