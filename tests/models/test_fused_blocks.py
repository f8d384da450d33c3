"""The fused-op forwards of G's blocks equal plain-PyTorch transcriptions of the original blocks.

Each plain module is an ``nn.Sequential`` of the original layers loaded with the same state dict;
outputs, gradients and BatchNorm running statistics (incl. ``num_batches_tracked`` and
``momentum=None``) must agree over several training steps and in eval mode. float64 throughout.
"""

import pytest
import torch
from torch import nn

from attngan_fast.models import INIT_STAGE_G, GlobalAttentionGeneral, ResBlock, upBlock

DT = torch.float64


def plain_up_block(cin, cout):
    return nn.Sequential(
        nn.Upsample(scale_factor=2, mode="nearest"),
        nn.Conv2d(cin, cout * 2, 3, 1, 1, bias=False),
        nn.BatchNorm2d(cout * 2),
        nn.GLU(dim=1),
    )


class PlainResBlock(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.block = nn.Sequential(
            nn.Conv2d(c, 2 * c, 3, 1, 1, bias=False),
            nn.BatchNorm2d(2 * c),
            nn.GLU(dim=1),
            nn.Conv2d(c, c, 3, 1, 1, bias=False),
            nn.BatchNorm2d(c),
        )

    def forward(self, x):
        return self.block(x) + x


class PlainInitStage(nn.Module):
    def __init__(self, ngf, nz):
        super().__init__()
        self.gf_dim = ngf
        self.fc = nn.Sequential(
            nn.Linear(nz, ngf * 32, bias=False), nn.BatchNorm1d(ngf * 32), nn.GLU(dim=1)
        )
        for i in range(4):
            setattr(self, f"upsample{i + 1}", plain_up_block(ngf >> i, ngf >> (i + 1)))

    def forward(self, z, c):
        out = self.fc(torch.cat((c, z), 1)).view(-1, self.gf_dim, 4, 4)
        for i in range(4):
            out = getattr(self, f"upsample{i + 1}")(out)
        return out


BN = nn.modules.batchnorm._BatchNorm


def randomise_bn(module):
    for m in module.modules():
        if isinstance(m, BN):
            nn.init.normal_(m.weight, 1.0, 0.3)
            nn.init.normal_(m.bias, 0.0, 0.3)


def set_momentum(module, momentum):
    for m in module.modules():
        if isinstance(m, BN):
            m.momentum = momentum


def check_pair(fused, plain, make_inputs, momentum, steps=3):
    randomise_bn(fused)
    fused = fused.to(DT)
    plain = plain.to(DT)
    plain.load_state_dict(fused.state_dict(), strict=True)
    set_momentum(fused, momentum)
    set_momentum(plain, momentum)
    for mode in ["train"] * steps + ["eval"]:
        fused.train(mode == "train")
        plain.train(mode == "train")
        inputs = make_inputs()
        leaves_f = [x.clone().requires_grad_() for x in inputs]
        leaves_p = [x.clone().requires_grad_() for x in inputs]
        out_f, out_p = fused(*leaves_f), plain(*leaves_p)
        torch.testing.assert_close(out_f, out_p, rtol=1e-10, atol=1e-10)
        grad = torch.randn_like(out_f)
        out_f.backward(grad)
        out_p.backward(grad)
        for a, b in zip(leaves_f, leaves_p):
            torch.testing.assert_close(a.grad, b.grad, rtol=1e-9, atol=1e-9)
        for (name, p_f), p_p in zip(fused.named_parameters(), plain.parameters()):
            torch.testing.assert_close(p_f.grad, p_p.grad, rtol=1e-9, atol=1e-9, msg=name)
        for (name, b_f), b_p in zip(fused.named_buffers(), plain.buffers()):
            torch.testing.assert_close(b_f, b_p, rtol=1e-12, atol=1e-12, msg=name)
    counts = [int(m.num_batches_tracked) for m in fused.modules() if isinstance(m, BN)]
    assert counts and all(c == steps for c in counts)


@pytest.mark.parametrize("momentum", [0.1, None, 0.5])
def test_up_block(momentum):
    def inputs():
        return [torch.randn(3, 6, 5, 7, dtype=DT)]

    check_pair(upBlock(6, 4), plain_up_block(6, 4), inputs, momentum)


@pytest.mark.parametrize("momentum", [0.1, None])
def test_res_block(momentum):
    check_pair(ResBlock(4), PlainResBlock(4), lambda: [torch.randn(3, 4, 6, 6, dtype=DT)], momentum)


@pytest.mark.parametrize("momentum", [0.1, None])
def test_init_stage(momentum):
    def inputs():
        return [torch.randn(4, 10, dtype=DT), torch.randn(4, 6, dtype=DT)]

    check_pair(INIT_STAGE_G(32, ncf=6, z_dim=10), PlainInitStage(32, 16), inputs, momentum)


def test_up_block_plain_sequential_path_is_kept():
    """Iterating the upBlock still gives the original layers (nn.Sequential semantics)."""
    block = upBlock(3, 2).to(DT).eval()
    randomise_bn(block)
    x = torch.randn(2, 3, 4, 4, dtype=DT)
    torch.testing.assert_close(block(x), nn.Sequential.forward(block, x))


# --- word attention ---------------------------------------------------------------------------


def original_attention(att, h, words, mask):
    """GlobalAttentionGeneral.forward of the original code (mask.repeat(queryL, 1) indexing)."""
    b, _, ih, iw = h.shape
    n, t = ih * iw, words.shape[2]
    target_t = h.view(b, -1, n).transpose(1, 2)
    source = att.conv_context(words.unsqueeze(3)).squeeze(3)
    scores = torch.bmm(target_t, source).view(b * n, t)
    if mask is not None:
        scores = scores.masked_fill(mask.repeat(n, 1).bool(), -float("inf"))
    attn = torch.softmax(scores, dim=1).view(b, n, t).transpose(1, 2).contiguous()
    context = torch.bmm(source, attn).view(b, -1, ih, iw)
    return context, attn.view(b, -1, ih, iw)


def per_sample_attention(att, h, words, mask):
    """Each sample with its own mask (the original's GlobalAttentionGeneral without its issue #93
    mask bug), written per sample."""
    outs, maps = [], []
    for i in range(h.shape[0]):
        src = att.conv_context.weight.flatten(1) @ words[i]  # C x T
        src = src[:, ~mask[i]]
        a = torch.softmax(h[i].flatten(1).t() @ src, dim=1)  # N x T_i
        outs.append((src @ a.t()).view_as(h[i]))
        full = torch.zeros(words.shape[2], a.shape[0], dtype=h.dtype)
        full[~mask[i]] = a.t()
        maps.append(full.view(-1, *h.shape[2:]))
    return torch.stack(outs), torch.stack(maps)


def test_attention_per_sample_mask():
    att = GlobalAttentionGeneral(5, 7).to(DT)
    h, words = torch.randn(3, 5, 4, 6, dtype=DT), torch.randn(3, 7, 9, dtype=DT)
    mask = torch.zeros(3, 9, dtype=torch.bool)
    mask[0, 4:], mask[2, 7:] = True, True
    att.applyMask(mask)
    ctx, attn = att(h, words)
    ref_ctx, ref_attn = per_sample_attention(att, h, words, mask)
    torch.testing.assert_close(ctx, ref_ctx)
    torch.testing.assert_close(attn, ref_attn)
    att.applyMask(mask.to(torch.uint8))  # the original's ByteTensor masks are accepted
    ctx2, none = att(h, words, need_attn=False)
    assert none is None
    torch.testing.assert_close(ctx2, ctx)


def test_attention_legacy_mask_reproduces_original():
    att = GlobalAttentionGeneral(5, 7, legacy_mask=True).to(DT)
    h, words = torch.randn(3, 5, 4, 4, dtype=DT), torch.randn(3, 7, 6, dtype=DT)
    mask = torch.zeros(3, 6, dtype=torch.bool)
    mask[1, 3:] = True
    mask[2, 5:] = True
    att.applyMask(mask)
    ctx, attn = att(h, words)
    ref_ctx, ref_attn = original_attention(att, h, words, mask)
    torch.testing.assert_close(ctx, ref_ctx)
    torch.testing.assert_close(attn, ref_attn)
    att.legacy_mask = False
    assert not torch.allclose(att(h, words)[0], ref_ctx)  # the default differs from the bug


def test_attention_without_mask():
    att = GlobalAttentionGeneral(4, 6).to(DT)
    h, words = torch.randn(2, 4, 3, 3, dtype=DT), torch.randn(2, 6, 5, dtype=DT)
    att.applyMask(None)
    ctx, attn = att(h, words)
    torch.testing.assert_close((ctx, attn), original_attention(att, h, words, None))
