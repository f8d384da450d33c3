"""The AttnGAN generator G_NET and its blocks, with the original module names and shapes.

State-dict keys and shapes are those of the original ``model.py`` (so its checkpoints load), while
the forward passes go through the fused ops of ``attngan_fast.ops`` using the child modules'
parameters: ``upsample_conv3x3_bn_glu`` for a whole upBlock (nearest-x2 + conv3x3 + BN + GLU),
``batch_norm_glu`` for the ResBlocks' BN + GLU, ``batch_norm_add`` for the BN + residual at the
end of a ResBlock. BatchNorm running statistics
evolve exactly as with the plain ``nn.BatchNorm*`` modules (see ``_batchnorm``).

Shapes (ngf = GAN.GF_DIM, B batch, T words): G_NET(z B x 100, sent B x 256, words B x 256 x T,
mask B x T) -> images B x 3 x 64 / 128 / 256, attention maps B x T x 64 x 64 and B x T x 128 x 128.

The same classes make the whole family of the talk (``GeneratorSpec``): stages without word
attention (StackGAN-v2), the sentence projected instead of CA_NET (GAN-INT-CLS's ``TEXT_PROJ``),
and the original's ``G_DCGAN`` (one image head on the last stage). Every variant runs on the same
fused upBlock, ResBlock and attention ops.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attngan_fast.config import CONDITIONINGS
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


class TEXT_PROJ(nn.Module):
    """GAN-INT-CLS's conditioning (Reed et al., ICML 2016): sent B x t_dim -> (c B x c_dim,
    None, None), ``fc`` = Linear(t_dim, c_dim) then LeakyReLU(0.2). No noise, so no KL term."""

    def __init__(self, t_dim: int = 256, c_dim: int = 128) -> None:
        super().__init__()
        self.t_dim = t_dim
        self.c_dim = c_dim
        self.fc = nn.Linear(t_dim, c_dim, bias=True)

    def forward(self, text_embedding: Tensor) -> tuple[Tensor, None, None]:
        return F.leaky_relu(self.fc(text_embedding), 0.2), None, None


class NEXT_STAGE_G(nn.Module):
    """Later stage: h B x ngf x H x W -> (B x ngf x 2H x 2W, attention B x T x H x W | None).

    With ``attention`` (AttnGAN): ``att`` (word attention) -> cat([h, context]) -> ``residual``
    (r_num ResBlocks of 2 ngf) -> ``upsample`` (upBlock 2 ngf -> ngf). Without (StackGAN-v2's
    tree without word features): h alone -> ``residual`` (r_num ResBlocks of ngf) ->
    ``upsample`` (upBlock ngf -> ngf); the attention map is then None.
    """

    def __init__(
        self,
        ngf: int,
        nef: int = 256,
        ncf: int = 100,
        r_num: int = 2,
        legacy_mask: bool = False,
        attention: bool = True,
    ) -> None:
        super().__init__()
        self.gf_dim = ngf
        self.ef_dim = nef
        self.cf_dim = ncf
        self.num_residual = r_num
        width = ngf * 2 if attention else ngf
        if attention:
            self.att = GlobalAttentionGeneral(ngf, nef, legacy_mask=legacy_mask)
        self.residual = nn.Sequential(*[ResBlock(width) for _ in range(r_num)])
        self.upsample = upBlock(width, ngf)

    @property
    def has_attention(self) -> bool:
        return hasattr(self, "att")

    def forward(
        self,
        h_code: Tensor,
        c_code: Tensor,
        word_embs: Tensor,
        mask: Tensor | None,
        need_attn: bool = True,
    ) -> tuple[Tensor, Tensor | None]:
        """``c_code`` is unused (kept for the original's signature)."""
        if not self.has_attention:
            return self.upsample(self.residual(h_code)), None
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


@dataclass(frozen=True)
class GeneratorSpec:
    """One generator of the AttnGAN family (``runtime.networks`` builds it from a config).

    ``branch_num`` stages (64, 128, 256 px of hidden features); ``attention[i]`` says whether
    stage i + 2 attends to the words (default: all do); ``conditioning`` ``CA_NET`` (CA_NET, with
    its KL term) or ``PROJECTION`` (TEXT_PROJ: Linear + LeakyReLU); ``single_image`` is the
    original's G_DCGAN: one image head on the last stage instead of one per stage.
    """

    ngf: int = 32
    nef: int = 256
    ncf: int = 100
    z_dim: int = 100
    r_num: int = 2
    branch_num: int = 3
    attention: tuple[bool, ...] | None = None
    conditioning: str = "CA_NET"
    single_image: bool = False

    def __post_init__(self) -> None:
        if not 1 <= self.branch_num <= 3:
            raise ValueError(f"branch_num must be 1, 2 or 3, got {self.branch_num}")
        attention = (True,) * (self.branch_num - 1) if self.attention is None else self.attention
        if len(attention) != self.branch_num - 1:
            raise ValueError(
                f"attention needs one flag per stage after the first ({self.branch_num - 1}), "
                f"got {attention}"
            )
        object.__setattr__(self, "attention", tuple(bool(a) for a in attention))
        if self.conditioning not in CONDITIONINGS:
            raise ValueError(
                f"conditioning must be one of {', '.join(CONDITIONINGS)}, got {self.conditioning!r}"
            )

    @property
    def image_stages(self) -> list[int]:
        """The stages (0-based) whose images G returns: every one, or the last (G_DCGAN)."""
        last = self.branch_num - 1
        return [last] if self.single_image else list(range(self.branch_num))

    @property
    def attention_stages(self) -> list[int]:
        """The stages (0-based) that attend to the words, in order (their maps come out so)."""
        return [i + 1 for i, on in enumerate(self.attention) if on]


class G_NET(nn.Module):
    """The AttnGAN generator with ``branch_num`` (1-3) stages: 64, 128, 256 px.

    Children ``ca_net`` (``text_proj`` with ``conditioning="PROJECTION"``), ``h_net1``,
    ``img_net1``, ``h_net2``, ``img_net2``, ``h_net3``, ``img_net3`` as in the original.
    ``attention``: one flag for every later stage, or one per stage (see ``GeneratorSpec``).
    """

    single_image = False

    def __init__(
        self,
        ngf: int = 32,
        nef: int = 256,
        ncf: int = 100,
        z_dim: int = 100,
        r_num: int = 2,
        branch_num: int = 3,
        legacy_mask: bool = False,
        attention: bool | Sequence[bool] = True,
        conditioning: str = "CA_NET",
    ) -> None:
        super().__init__()
        flags = (attention,) * (branch_num - 1) if isinstance(attention, bool) else attention
        self.spec = GeneratorSpec(
            ngf, nef, ncf, z_dim, r_num, branch_num, tuple(flags), conditioning,
            self.single_image,
        )  # fmt: skip
        self.branch_num = branch_num
        self.z_dim = z_dim
        if conditioning == "CA_NET":
            self.ca_net = CA_NET(nef, ncf)
        else:
            self.text_proj = TEXT_PROJ(nef, ncf)
        self.h_net1 = INIT_STAGE_G(ngf * 16, ncf, z_dim)
        for i in range(2, branch_num + 1):
            if not self.single_image:
                setattr(self, f"img_net{i - 1}", GET_IMAGE_G(ngf))
            stage = NEXT_STAGE_G(ngf, nef, ncf, r_num, legacy_mask, self.spec.attention[i - 2])
            setattr(self, f"h_net{i}", stage)
        if self.single_image:
            self.img_net = GET_IMAGE_G(ngf)
        else:
            setattr(self, f"img_net{branch_num}", GET_IMAGE_G(ngf))

    @property
    def condition_net(self) -> nn.Module:
        """CA_NET or TEXT_PROJ: sent -> (c, mu | None, logvar | None)."""
        return self.ca_net if self.spec.conditioning == "CA_NET" else self.text_proj

    @property
    def image_sizes(self) -> list[int]:
        """Side in pixels of each image ``forward`` returns."""
        return [64 * 2**i for i in self.spec.image_stages]

    def image_head(self, stage: int) -> nn.Module | None:
        """The image head of ``stage`` (0-based), None where the stage has none."""
        if self.single_image:
            return self.img_net if stage == self.branch_num - 1 else None
        return getattr(self, f"img_net{stage + 1}")

    def forward(
        self,
        z_code: Tensor,
        sent_emb: Tensor,
        word_embs: Tensor | None,
        mask: Tensor | None,
        need_attn: bool = True,
    ) -> tuple[list[Tensor], list[Tensor], Tensor | None, Tensor | None]:
        """z B x z_dim, sent B x nef, words B x nef x T, mask B x T (True = padding) ->
        (fake_imgs [B x 3 x 64 x 64, ...] one per ``image_sizes``, att_maps [B x T x 64 x 64,
        ...] one per attention stage, mu, logvar), mu / logvar None without CA_NET.

        ``att_maps`` is empty when ``need_attn`` is False. ``word_embs`` / ``mask`` may be None
        when no stage attends.
        """
        c_code, mu, logvar = self.condition_net(sent_emb)
        h_code = self.h_net1(z_code, c_code)
        fake_imgs, att_maps = [], []
        for stage in range(self.branch_num):
            if stage:
                h_net = getattr(self, f"h_net{stage + 1}")
                h_code, att = h_net(h_code, c_code, word_embs, mask, need_attn)
                if att is not None:
                    att_maps.append(att)
            head = self.image_head(stage)
            if head is not None:
                fake_imgs.append(head(h_code))
        return fake_imgs, att_maps, mu, logvar


class G_DCGAN(G_NET):
    """The original's G_DCGAN (``GAN.B_DCGAN: True``): G_NET's conditioning and stages with one
    image head, ``img_net``, on the last stage: one image of 64 * 2**(branch_num - 1) px.

    Children ``ca_net``, ``h_net1``, ``h_net2``, ``h_net3``, ``img_net`` as in the original.
    """

    single_image = True
