"""GlobalAttentionGeneral: G's word-region attention (the original's ``code/GlobalAttention.py``)
through ``ops.word_attention``."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from attngan_fast import ops


def conv1x1(in_planes: int, out_planes: int, bias: bool = False) -> nn.Conv2d:
    """1x1 convolution (no bias by default)."""
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=1, padding=0, bias=bias)


class GlobalAttentionGeneral(nn.Module):
    """Attention of every image region over the words.

    ``conv_context`` (conv1x1 cdf -> idf) projects the words to the image's channels; each region
    takes a softmax over the unmasked words of its scores and returns their weighted sum.
    As in the original, the mask is set beforehand with ``applyMask(mask)`` (B x T, True or 1 =
    padding word; None = no mask). ``legacy_mask=True`` reproduces the original's misaligned mask
    (issue #93 of the original repository) for checkpoints trained with it.
    """

    def __init__(self, idf: int, cdf: int, legacy_mask: bool = False) -> None:
        super().__init__()
        self.conv_context = conv1x1(cdf, idf)
        self.legacy_mask = legacy_mask
        self.mask: Tensor | None = None

    def applyMask(self, mask: Tensor | None) -> None:
        """Set the word mask (B x T, True = padding) used by the following calls."""
        self.mask = mask

    def forward(
        self, input: Tensor, context: Tensor, need_attn: bool = True
    ) -> tuple[Tensor, Tensor | None]:
        """input B x idf x H x W, context (words) B x cdf x T -> (B x idf x H x W, B x T x H x W).

        The attention map is None when ``need_attn`` is False.
        """
        batch, channels, height, width = input.shape
        source = torch.matmul(self.conv_context.weight.flatten(1), context)  # B x idf x T
        mask = self.mask
        if mask is not None and mask.dtype != torch.bool:
            mask = mask.bool()
        weighted, attn = ops.word_attention(
            input.reshape(batch, channels, height * width),
            source,
            mask,
            need_attn=need_attn,
            legacy_mask=self.legacy_mask,
        )
        weighted = weighted.view(batch, channels, height, width)
        if attn is not None:
            attn = attn.view(batch, attn.shape[1], height, width)
        return weighted, attn
