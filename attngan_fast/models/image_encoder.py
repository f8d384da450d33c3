"""DAMSM image encoders: ``forward(images) -> (local B x nef x h x w, global B x nef)``.

``CNN_ENCODER`` is the original: a frozen ImageNet Inception-v3 trunk on images resized to
299 x 299, local features from Mixed_6e projected by ``emb_features`` (conv1x1 768 -> nef, 17 x 17
regions) and a global code from Mixed_7c (average pool) projected by ``emb_cnn_code``
(Linear 2048 -> nef). Its state dict has the keys of the original's (``Conv2d_1a_3x3.conv.weight``
... ``Mixed_7c.branch_pool.bn.running_var``, ``emb_features.weight``, ``emb_cnn_code.weight``,
``emb_cnn_code.bias``), so the released ``image_encoder200.pth`` loads.

``SmallImageEncoder`` is a light conv encoder trained from scratch, for small datasets and images.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from attngan_fast.models.attention import conv1x1
from attngan_fast.models.inception import InceptionTrunk


class CNN_ENCODER(InceptionTrunk):
    """Inception-v3 image encoder (images B x 3 x H x W in [-1, 1], any size).

    Only ``emb_features`` and ``emb_cnn_code`` train: the trunk's parameters have
    ``requires_grad=False`` (load them with ``load_inception_weights``). Train/eval mode still
    applies to the trunk's BatchNorm layers, as in the original. ``align_corners=True`` (default)
    resizes to 299 as the original did under PyTorch 0.3, with which the released encoders were
    trained; False gives the modern bilinear resize.
    """

    def __init__(self, nef: int = 256, align_corners: bool = True) -> None:
        super().__init__()
        self.nef = nef
        self.align_corners = align_corners
        for param in self.parameters():
            param.requires_grad_(False)
        self.emb_features = conv1x1(768, nef)
        self.emb_cnn_code = nn.Linear(2048, nef)
        self.init_trainable_weights()

    def init_trainable_weights(self) -> None:
        """The projections' weights uniform(-0.1, 0.1), as the original."""
        nn.init.uniform_(self.emb_features.weight, -0.1, 0.1)
        nn.init.uniform_(self.emb_cnn_code.weight, -0.1, 0.1)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """images B x 3 x H x W -> (local B x nef x 17 x 17, global B x nef)."""
        x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=self.align_corners)
        mixed_6e, mixed_7c = self.forward_trunk(x)
        cnn_code = self.emb_cnn_code(F.avg_pool2d(mixed_7c, kernel_size=8).flatten(1))
        return self.emb_features(mixed_6e), cnn_code


def _down(in_channels: int, out_channels: int, bn: bool = True) -> list[nn.Module]:
    """Conv(k4 s2 p1) [-> BN] -> LeakyReLU(0.2): halves the size."""
    layers: list[nn.Module] = [nn.Conv2d(in_channels, out_channels, 4, 2, 1, bias=not bn)]
    if bn:
        layers.append(nn.BatchNorm2d(out_channels))
    layers.append(nn.LeakyReLU(0.2, inplace=True))
    return layers


class SmallImageEncoder(nn.Module):
    """A light image encoder for small datasets (trained from scratch, no pretrained weights).

    Images are resized to ``image_size`` (area averaging when larger, bilinear when smaller).
    ``local_net`` (3 stride-2 stages, 3 -> ndf -> 2ndf -> 4ndf) gives regions at image_size / 8
    (8 x 8 for 64 px, 16 x 16 for 128 px), projected by ``emb_features`` (conv1x1 4ndf -> nef);
    ``global_net`` (one more stage to 8ndf) is averaged and projected by ``emb_cnn_code``
    (Linear 8ndf -> nef).
    """

    def __init__(self, nef: int = 256, ndf: int = 64, image_size: int = 64) -> None:
        super().__init__()
        if image_size % 16:
            raise ValueError(f"image_size must be a multiple of 16, got {image_size}")
        self.nef = nef
        self.image_size = image_size
        self.local_net = nn.Sequential(
            *_down(3, ndf, bn=False), *_down(ndf, ndf * 2), *_down(ndf * 2, ndf * 4)
        )
        self.global_net = nn.Sequential(*_down(ndf * 4, ndf * 8))
        self.emb_features = conv1x1(ndf * 4, nef)
        self.emb_cnn_code = nn.Linear(ndf * 8, nef)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """images B x 3 x H x W -> (local B x nef x S/8 x S/8, global B x nef), S = image_size."""
        size = self.image_size  # square images expected
        if x.shape[-2] > size and x.shape[-2] % size == 0:  # "area" by a whole factor, faster
            x = F.avg_pool2d(x, x.shape[-2] // size)
        elif x.shape[-2] > size:
            x = F.interpolate(x, size=(size, size), mode="area")
        elif x.shape[-2] < size:
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
        local = self.local_net(x)
        code = self.global_net(local).mean(dim=(2, 3))
        return self.emb_features(local), self.emb_cnn_code(code)
