"""The AttnGAN discriminators D_NET64 / D_NET128 / D_NET256, returning logits.

Module names and shapes are those of the original ``model.py``. Each D maps an image to features
B x 8ndf x 4 x 4 (``forward``); the heads ``UNCOND_DNET(features)`` and
``COND_DNET(features, sent_emb)`` map them to B logits. ``b_jcu=False`` leaves out the
unconditional head (the original's G_DCGAN setting, and GAN-INT-CLS); ``text_dim`` gives the
conditional head GAN-INT-CLS's text projection. The original ended the heads in a Sigmoid
and used BCELoss; that pair is not autocast-safe, so the heads return logits for
``F.binary_cross_entropy_with_logits`` (same values, same parameters: checkpoints still load).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from attngan_fast.models.generator import conv3x3


def Block3x3_leakRelu(in_planes: int, out_planes: int) -> nn.Sequential:
    """conv3x3 -> BatchNorm2d -> LeakyReLU(0.2), same size."""
    return nn.Sequential(
        conv3x3(in_planes, out_planes), nn.BatchNorm2d(out_planes), nn.LeakyReLU(0.2, inplace=True)
    )


def downBlock(in_planes: int, out_planes: int) -> nn.Sequential:
    """Conv(k4 s2 p1, no bias) -> BatchNorm2d -> LeakyReLU(0.2): halves the size."""
    return nn.Sequential(
        nn.Conv2d(in_planes, out_planes, 4, 2, 1, bias=False),
        nn.BatchNorm2d(out_planes),
        nn.LeakyReLU(0.2, inplace=True),
    )


def encode_image_by_16times(ndf: int) -> nn.Sequential:
    """B x 3 x S x S -> B x 8ndf x S/16 x S/16 (four stride-2 convs; no BN on the first)."""
    return nn.Sequential(
        nn.Conv2d(3, ndf, 4, 2, 1, bias=False),
        nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(ndf, ndf * 2, 4, 2, 1, bias=False),
        nn.BatchNorm2d(ndf * 2),
        nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(ndf * 2, ndf * 4, 4, 2, 1, bias=False),
        nn.BatchNorm2d(ndf * 4),
        nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(ndf * 4, ndf * 8, 4, 2, 1, bias=False),
        nn.BatchNorm2d(ndf * 8),
        nn.LeakyReLU(0.2, inplace=True),
    )


class D_GET_LOGITS(nn.Module):
    """Head: features B x 8ndf x 4 x 4 [+ sent B x nef] -> logits B.

    Conditional (``bcondition``): sent tiled to 4 x 4, concatenated, ``jointConv`` =
    Block3x3_leakRelu(8ndf + nef, 8ndf). ``outlogits`` = [Conv2d(8ndf, 1, k4, s4)].
    With ``text_dim`` (GAN-INT-CLS, Reed et al. 2016): the sentence is first projected,
    ``text_proj`` = [Linear(nef, text_dim), LeakyReLU(0.2)], and ``jointConv`` is a 1 x 1
    conv (8ndf + text_dim -> 8ndf) -> BatchNorm2d -> LeakyReLU(0.2).
    """

    def __init__(
        self, ndf: int, nef: int = 256, bcondition: bool = False, text_dim: int = 0
    ) -> None:
        super().__init__()
        self.df_dim = ndf
        self.ef_dim = nef
        self.bcondition = bcondition
        if bcondition and text_dim:
            self.text_proj = nn.Sequential(nn.Linear(nef, text_dim), nn.LeakyReLU(0.2))
            self.jointConv = nn.Sequential(
                nn.Conv2d(ndf * 8 + text_dim, ndf * 8, kernel_size=1, bias=False),
                nn.BatchNorm2d(ndf * 8),
                nn.LeakyReLU(0.2, inplace=True),
            )
        elif bcondition:
            self.jointConv = Block3x3_leakRelu(ndf * 8 + nef, ndf * 8)
        self.outlogits = nn.Sequential(nn.Conv2d(ndf * 8, 1, kernel_size=4, stride=4))

    def forward(self, h_code: Tensor, c_code: Tensor | None = None) -> Tensor:
        if h_code.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
            # On 4 x 4 maps oneDNN's bf16 kernels lose to fp32 (the 1-channel ``outlogits`` conv
            # takes 40x its fp32 time, ``jointConv`` 2x): on the CPU the head runs in fp32.
            with torch.autocast("cpu", enabled=False):
                c_code = None if c_code is None else c_code.float()
                return self._logits(h_code.float(), c_code)
        return self._logits(h_code, c_code)

    def _logits(self, h_code: Tensor, c_code: Tensor | None) -> Tensor:
        if self.bcondition and c_code is not None:
            if hasattr(self, "text_proj"):
                c_code = self.text_proj(c_code)
            c_code = c_code.view(*c_code.shape, 1, 1).expand(-1, -1, *h_code.shape[2:])
            h_code = self.jointConv(torch.cat((h_code, c_code), 1))
        return self.outlogits(h_code).view(-1)


class D_NET64(nn.Module):
    """D for 64 px: ``img_code_s16`` -> B x 8ndf x 4 x 4; heads ``UNCOND_DNET``, ``COND_DNET``."""

    def __init__(
        self, ndf: int = 64, nef: int = 256, b_jcu: bool = True, text_dim: int = 0
    ) -> None:
        super().__init__()
        self.img_code_s16 = encode_image_by_16times(ndf)
        self.UNCOND_DNET = D_GET_LOGITS(ndf, nef, bcondition=False) if b_jcu else None
        self.COND_DNET = D_GET_LOGITS(ndf, nef, bcondition=True, text_dim=text_dim)

    def forward(self, x_var: Tensor) -> Tensor:
        """Images B x 3 x 64 x 64 -> features B x 8ndf x 4 x 4."""
        return self.img_code_s16(x_var)


class D_NET128(nn.Module):
    """D for 128 px: ``img_code_s16``, ``img_code_s32`` (8 -> 16ndf), ``img_code_s32_1`` (8ndf)."""

    def __init__(
        self, ndf: int = 64, nef: int = 256, b_jcu: bool = True, text_dim: int = 0
    ) -> None:
        super().__init__()
        self.img_code_s16 = encode_image_by_16times(ndf)
        self.img_code_s32 = downBlock(ndf * 8, ndf * 16)
        self.img_code_s32_1 = Block3x3_leakRelu(ndf * 16, ndf * 8)
        self.UNCOND_DNET = D_GET_LOGITS(ndf, nef, bcondition=False) if b_jcu else None
        self.COND_DNET = D_GET_LOGITS(ndf, nef, bcondition=True, text_dim=text_dim)

    def forward(self, x_var: Tensor) -> Tensor:
        """Images B x 3 x 128 x 128 -> features B x 8ndf x 4 x 4."""
        return self.img_code_s32_1(self.img_code_s32(self.img_code_s16(x_var)))


class D_NET256(nn.Module):
    """D for 256 px: ``img_code_s16``, downBlocks ``img_code_s32`` (-> 16ndf) and ``img_code_s64``
    (-> 32ndf), then ``img_code_s64_1`` (32 -> 16ndf) and ``img_code_s64_2`` (16 -> 8ndf)."""

    def __init__(
        self, ndf: int = 64, nef: int = 256, b_jcu: bool = True, text_dim: int = 0
    ) -> None:
        super().__init__()
        self.img_code_s16 = encode_image_by_16times(ndf)
        self.img_code_s32 = downBlock(ndf * 8, ndf * 16)
        self.img_code_s64 = downBlock(ndf * 16, ndf * 32)
        self.img_code_s64_1 = Block3x3_leakRelu(ndf * 32, ndf * 16)
        self.img_code_s64_2 = Block3x3_leakRelu(ndf * 16, ndf * 8)
        self.UNCOND_DNET = D_GET_LOGITS(ndf, nef, bcondition=False) if b_jcu else None
        self.COND_DNET = D_GET_LOGITS(ndf, nef, bcondition=True, text_dim=text_dim)

    def forward(self, x_var: Tensor) -> Tensor:
        """Images B x 3 x 256 x 256 -> features B x 8ndf x 4 x 4."""
        x = self.img_code_s64(self.img_code_s32(self.img_code_s16(x_var)))
        return self.img_code_s64_2(self.img_code_s64_1(x))


D_NETS = (D_NET64, D_NET128, D_NET256)
"""The discriminator class of each stage (64, 128, 256 px)."""
