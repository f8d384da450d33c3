"""The AttnGAN generator G_NET and its blocks, with the original module names and shapes.

State-dict keys and shapes are those of the original ``model.py`` (so its checkpoints load), while
the forward passes go through the fused ops of ``attngan_fast.ops`` using the child modules'
parameters: ``upsample_conv3x3_bn_glu`` for a whole upBlock (nearest-x2 + conv3x3 + BN + GLU),
``batch_norm_glu`` for the ResBlocks' BN + GLU, ``batch_norm_add`` for the BN + residual at the
end of a ResBlock. BatchNorm running statistics
evolve exactly as with the plain ``nn.BatchNorm*`` modules (see ``_batchnorm``).

Shapes (ngf = GAN.GF_DIM, B batch, T words): G_NET(z B x 100, sent B x 256, words B x 256 x T,
mask B x T) -> images B x 3 x 64 / 128 / 256, attention maps B x T x 64 x 64 and B x T x 128 x 128.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attngan_fast.models._batchnorm import bn_add, bn_glu, upconv_bn_glu
from attngan_fast.models.attention import GlobalAttentionGeneral


def conv3x3(in_planes: int, out_planes: int) -> nn.Conv2d:
    """3x3 convolution, padding 1, no bias."""
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=1, padding=1, bias=False)


class upBlock(nn.Sequential):
    """Nearest x2 upsample -> conv3x3(in, 2 out) -> BatchNorm2d -> GLU.

    B x in x H x W -> B x out x 2H x 2W.

    Children ``0`` Upsample, ``1`` conv, ``2`` BN, ``3`` GLU as in the original nn.Sequential
    (keys ``1.weight``, ``2.weight``, ``2.bias``, ``2.running_mean``, ...).
    """

    def __init__(self, in_planes: int, out_planes: int) -> None:
        super().__init__(
            nn.Upsample(scale_factor=2, mode="nearest"),
            conv3x3(in_planes, out_planes * 2),
            nn.BatchNorm2d(out_planes * 2),
            nn.GLU(dim=1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return upconv_bn_glu(x, self[1], self[2])


class ResBlock(nn.Module):
    """``block`` = [conv3x3(C, 2C), BN, GLU, conv3x3(C, C), BN]; out = block(x) + x.

    B x C x H x W -> B x C x H x W.
    """

    def __init__(self, channel_num: int) -> None:
        super().__init__()
        self.block = nn.Sequential(
            conv3x3(channel_num, channel_num * 2),
            nn.BatchNorm2d(channel_num * 2),
            nn.GLU(dim=1),
            conv3x3(channel_num, channel_num),
            nn.BatchNorm2d(channel_num),
        )

    def forward(self, x: Tensor) -> Tensor:
        conv1, bn1, _, conv2, bn2 = self.block
        out = bn_glu(F.conv2d(x, conv1.weight, padding=1), bn1)
        return bn_add(F.conv2d(out, conv2.weight, padding=1), x, bn2)


class CA_NET(nn.Module):
    """Conditioning augmentation: sent B x t_dim -> (c B x c_dim, mu B x c_dim, logvar B x c_dim).

    ``fc`` = Linear(t_dim, 4 c_dim) then GLU; c = mu + eps * exp(logvar / 2), eps ~ N(0, I).
    """

    def __init__(self, t_dim: int = 256, c_dim: int = 100) -> None:
        super().__init__()
        self.t_dim = t_dim
        self.c_dim = c_dim
        self.fc = nn.Linear(t_dim, c_dim * 4, bias=True)
        self.relu = nn.GLU(dim=1)

    def encode(self, text_embedding: Tensor) -> tuple[Tensor, Tensor]:
        x = self.relu(self.fc(text_embedding))
        return x[:, : self.c_dim], x[:, self.c_dim :]

    def reparametrize(self, mu: Tensor, logvar: Tensor) -> Tensor:
        std = torch.exp(0.5 * logvar)
        return mu + torch.randn_like(std) * std

    def forward(self, text_embedding: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        mu, logvar = self.encode(text_embedding)
        return self.reparametrize(mu, logvar), mu, logvar


class INIT_STAGE_G(nn.Module):
    """First stage: cat(c, z) B x (ncf + z_dim) -> B x ngf/16 x 64 x 64 (ngf = 16 GF_DIM here).

    ``fc`` = [Linear(ncf + z_dim, 32 ngf, no bias), BatchNorm1d, GLU] -> B x ngf x 4 x 4, then
    ``upsample1..4`` halve the channels and double the size.
    """

    def __init__(self, ngf: int, ncf: int = 100, z_dim: int = 100) -> None:
        super().__init__()
        self.gf_dim = ngf
        self.in_dim = z_dim + ncf
        self.fc = nn.Sequential(
            nn.Linear(self.in_dim, ngf * 4 * 4 * 2, bias=False),
            nn.BatchNorm1d(ngf * 4 * 4 * 2),
            nn.GLU(dim=1),
        )
        self.upsample1 = upBlock(ngf, ngf // 2)
        self.upsample2 = upBlock(ngf // 2, ngf // 4)
        self.upsample3 = upBlock(ngf // 4, ngf // 8)
        self.upsample4 = upBlock(ngf // 8, ngf // 16)

    def forward(self, z_code: Tensor, c_code: Tensor) -> Tensor:
        c_z_code = torch.cat((c_code, z_code), 1)
        out = bn_glu(F.linear(c_z_code, self.fc[0].weight), self.fc[1])
        out = out.view(-1, self.gf_dim, 4, 4)
        out = self.upsample1(out)
        out = self.upsample2(out)
        out = self.upsample3(out)
        return self.upsample4(out)


class NEXT_STAGE_G(nn.Module):
    """Later stage: h B x ngf x H x W -> (B x ngf x 2H x 2W, attention B x T x H x W | None).

    ``att`` (word attention) -> cat([h, context]) -> ``residual`` (r_num ResBlocks of 2 ngf) ->
    ``upsample`` (upBlock 2 ngf -> ngf).
    """

    def __init__(
        self, ngf: int, nef: int = 256, ncf: int = 100, r_num: int = 2, legacy_mask: bool = False
    ) -> None:
        super().__init__()
        self.gf_dim = ngf
        self.ef_dim = nef
        self.cf_dim = ncf
        self.num_residual = r_num
        self.att = GlobalAttentionGeneral(ngf, nef, legacy_mask=legacy_mask)
        self.residual = nn.Sequential(*[ResBlock(ngf * 2) for _ in range(r_num)])
        self.upsample = upBlock(ngf * 2, ngf)

    def forward(
        self,
        h_code: Tensor,
        c_code: Tensor,
        word_embs: Tensor,
        mask: Tensor | None,
        need_attn: bool = True,
    ) -> tuple[Tensor, Tensor | None]:
        """``c_code`` is unused (kept for the original's signature)."""
        self.att.applyMask(mask)
        context, att = self.att(h_code, word_embs, need_attn=need_attn)
        out = self.residual(torch.cat((h_code, context), 1))
        return self.upsample(out), att


class GET_IMAGE_G(nn.Module):
    """``img`` = [conv3x3(ngf, 3), Tanh]: B x ngf x H x W -> B x 3 x H x W in [-1, 1]."""

    def __init__(self, ngf: int) -> None:
        super().__init__()
        self.gf_dim = ngf
        self.img = nn.Sequential(conv3x3(ngf, 3), nn.Tanh())

    def forward(self, h_code: Tensor) -> Tensor:
        return self.img(h_code)


class G_NET(nn.Module):
    """The AttnGAN generator with ``branch_num`` (1-3) stages: 64, 128, 256 px.

    Children ``ca_net``, ``h_net1``, ``img_net1``, ``h_net2``, ``img_net2``, ``h_net3``,
    ``img_net3`` as in the original.
    """

    def __init__(
        self,
        ngf: int = 32,
        nef: int = 256,
        ncf: int = 100,
        z_dim: int = 100,
        r_num: int = 2,
        branch_num: int = 3,
        legacy_mask: bool = False,
    ) -> None:
        super().__init__()
        if not 1 <= branch_num <= 3:
            raise ValueError(f"branch_num must be 1, 2 or 3, got {branch_num}")
        self.branch_num = branch_num
        self.ca_net = CA_NET(nef, ncf)
        self.h_net1 = INIT_STAGE_G(ngf * 16, ncf, z_dim)
        self.img_net1 = GET_IMAGE_G(ngf)
        if branch_num > 1:
            self.h_net2 = NEXT_STAGE_G(ngf, nef, ncf, r_num, legacy_mask)
            self.img_net2 = GET_IMAGE_G(ngf)
        if branch_num > 2:
            self.h_net3 = NEXT_STAGE_G(ngf, nef, ncf, r_num, legacy_mask)
            self.img_net3 = GET_IMAGE_G(ngf)

    def forward(
        self,
        z_code: Tensor,
        sent_emb: Tensor,
        word_embs: Tensor,
        mask: Tensor | None,
        need_attn: bool = True,
    ) -> tuple[list[Tensor], list[Tensor], Tensor, Tensor]:
        """z B x z_dim, sent B x nef, words B x nef x T, mask B x T (True = padding) ->
        (fake_imgs [B x 3 x 64 x 64, ...], att_maps [B x T x 64 x 64, ...], mu, logvar).

        ``att_maps`` is empty when ``need_attn`` is False.
        """
        c_code, mu, logvar = self.ca_net(sent_emb)
        h_code = self.h_net1(z_code, c_code)
        fake_imgs = [self.img_net1(h_code)]
        att_maps = []
        for i in range(2, self.branch_num + 1):
            h_net = getattr(self, f"h_net{i}")
            h_code, att = h_net(h_code, c_code, word_embs, mask, need_attn)
            fake_imgs.append(getattr(self, f"img_net{i}")(h_code))
            if att is not None:
                att_maps.append(att)
        return fake_imgs, att_maps, mu, logvar
