"""Inception-v3 with torchvision's module names, written here (no torchvision dependency).

``InceptionTrunk`` holds ``Conv2d_1a_3x3`` ... ``Mixed_7c`` (BasicConv2d = ``conv`` without bias +
``bn`` with eps 1e-3 + ReLU) and returns the Mixed_6e (B x 768 x 17 x 17) and Mixed_7c
(B x 2048 x 8 x 8) maps of a 299 x 299 input. ``Inception3`` adds the ImageNet classifier ``fc``
and gives the 2048-d pool3 features (FID) and the logits (Inception score). torchvision's
``inception_v3`` state dicts load with ``load_inception_weights``, which skips the auxiliary
classifier (``AuxLogits.*``), unused by inference.

Inputs are used as given: torchvision's ``transform_input`` re-normalisation is not applied.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class BasicConv2d(nn.Module):
    """``conv`` (no bias) -> ``bn`` (BatchNorm2d, eps 1e-3) -> ReLU."""

    def __init__(self, in_channels: int, out_channels: int, **kwargs: object) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, bias=False, **kwargs)
        self.bn = nn.BatchNorm2d(out_channels, eps=0.001)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.bn(self.conv(x)), inplace=True)


def _avg_pool_3x3(x: Tensor) -> Tensor:
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1)


class InceptionA(nn.Module):
    """35 x 35 block: in -> 224 + pool_features channels."""

    def __init__(self, in_channels: int, pool_features: int) -> None:
        super().__init__()
        self.branch1x1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch5x5_1 = BasicConv2d(in_channels, 48, kernel_size=1)
        self.branch5x5_2 = BasicConv2d(48, 64, kernel_size=5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, padding=1)
        self.branch_pool = BasicConv2d(in_channels, pool_features, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        pool = self.branch_pool(_avg_pool_3x3(x))
        return torch.cat([self.branch1x1(x), b5, b3, pool], 1)


class InceptionB(nn.Module):
    """Grid reduction 35 -> 17: in -> in + 480 channels."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch3x3 = BasicConv2d(in_channels, 384, kernel_size=3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch3x3(x), b3, F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class InceptionC(nn.Module):
    """17 x 17 block with factorised 7x7 convolutions: in -> 768 channels."""

    def __init__(self, in_channels: int, channels_7x7: int) -> None:
        super().__init__()
        c7 = channels_7x7
        self.branch1x1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch7x7_1 = BasicConv2d(in_channels, c7, kernel_size=1)
        self.branch7x7_2 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(in_channels, c7, kernel_size=1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(in_channels, 192, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        b7dbl = self.branch7x7dbl_1(x)
        for layer in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4):
            b7dbl = layer(b7dbl)
        b7dbl = self.branch7x7dbl_5(b7dbl)
        pool = self.branch_pool(_avg_pool_3x3(x))
        return torch.cat([self.branch1x1(x), b7, b7dbl, pool], 1)


class InceptionD(nn.Module):
    """Grid reduction 17 -> 8: in -> in + 512 channels."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch3x3_1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch3x3_2 = BasicConv2d(192, 320, kernel_size=3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, kernel_size=3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_1(x)
        for layer in (self.branch7x7x3_2, self.branch7x7x3_3, self.branch7x7x3_4):
            b7 = layer(b7)
        return torch.cat([b3, b7, F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class InceptionE(nn.Module):
    """8 x 8 block with expanded filter banks: in -> 2048 channels."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch1x1 = BasicConv2d(in_channels, 320, kernel_size=1)
        self.branch3x3_1 = BasicConv2d(in_channels, 384, kernel_size=1)
        self.branch3x3_2a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 448, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, kernel_size=3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(in_channels, 192, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        b3dbl = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        b3dbl = torch.cat([self.branch3x3dbl_3a(b3dbl), self.branch3x3dbl_3b(b3dbl)], 1)
        pool = self.branch_pool(_avg_pool_3x3(x))
        return torch.cat([self.branch1x1(x), b3, b3dbl, pool], 1)


TRUNK_MODULES = (
    "Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "Conv2d_3b_1x1", "Conv2d_4a_3x3",
    "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d",
    "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c",
)  # fmt: skip
"""Names of the trunk's children, input to output."""


class InceptionTrunk(nn.Module):
    """The Inception-v3 layers ``Conv2d_1a_3x3`` ... ``Mixed_7c`` (no classifier).

    Initialised as torchvision does (truncated normal, std 0.1; BN weight 1, bias 0); meant to be
    loaded with pretrained weights (``load_inception_weights``).
    """

    def __init__(self) -> None:
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, kernel_size=3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, kernel_size=3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, kernel_size=3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, kernel_size=1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, kernel_size=3)
        self.Mixed_5b = InceptionA(192, pool_features=32)
        self.Mixed_5c = InceptionA(256, pool_features=64)
        self.Mixed_5d = InceptionA(288, pool_features=64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = InceptionC(768, channels_7x7=128)
        self.Mixed_6c = InceptionC(768, channels_7x7=160)
        self.Mixed_6d = InceptionC(768, channels_7x7=160)
        self.Mixed_6e = InceptionC(768, channels_7x7=192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = InceptionE(1280)
        self.Mixed_7c = InceptionE(2048)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.trunc_normal_(m.weight, mean=0.0, std=0.1, a=-2.0, b=2.0)

    def forward_trunk(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x B x 3 x 299 x 299 -> (Mixed_6e B x 768 x 17 x 17, Mixed_7c B x 2048 x 8 x 8)."""
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        for name in TRUNK_MODULES[5:13]:  # Mixed_5b ... Mixed_6e
            x = getattr(self, name)(x)
        mixed_6e = x
        x = self.Mixed_7c(self.Mixed_7b(self.Mixed_7a(x)))
        return mixed_6e, x


class InceptionFeatures(NamedTuple):
    pool3: Tensor  # B x 2048, global average of Mixed_7c (the FID features)
    logits: Tensor  # B x num_classes


class Inception3(InceptionTrunk):
    """Inception-v3 classifier: the trunk, global average pooling, dropout and ``fc``.

    ``forward(x)`` gives the logits (B x num_classes); ``features(x)`` gives pool3 and logits.
    """

    def __init__(self, num_classes: int = 1000, dropout: float = 0.5) -> None:
        super().__init__()
        self.dropout = nn.Dropout(p=dropout)
        self.fc = nn.Linear(2048, num_classes)
        nn.init.trunc_normal_(self.fc.weight, mean=0.0, std=0.1, a=-2.0, b=2.0)

    def features(self, x: Tensor) -> InceptionFeatures:
        """x B x 3 x 299 x 299 -> (pool3 B x 2048, logits B x num_classes)."""
        pool3 = self.forward_trunk(x)[1].mean(dim=(2, 3))
        return InceptionFeatures(pool3, self.fc(self.dropout(pool3)))

    def forward(self, x: Tensor) -> Tensor:
        return self.features(x).logits


def load_inception_weights(module: nn.Module, state_dict: Mapping[str, Tensor]) -> None:
    """Load Inception-v3 weights (torchvision's ``inception_v3`` state dict, or one saved from a
    module with the same layer names such as AttnGAN's image encoder) into ``module``.

    Only the layers ``module`` has among the trunk's and ``fc`` are read; others (``AuxLogits``,
    an absent ``fc``, the image encoder's projections) are skipped. Every parameter and buffer of
    those layers must be in ``state_dict`` (``num_batches_tracked`` may be absent, as in state
    dicts saved by PyTorch before 0.4), else KeyError naming the missing keys.
    """
    layers = {name for name in (*TRUNK_MODULES, "fc") if hasattr(module, name)}
    wanted = {k: v for k, v in state_dict.items() if k.split(".", 1)[0] in layers}
    result = module.load_state_dict(wanted, strict=False)
    missing = [k for k in result.missing_keys if k.split(".", 1)[0] in layers]
    if missing:
        raise KeyError(f"the state dict lacks {len(missing)} Inception keys, e.g. {missing[:5]}")
