"""Pictures: image grids and the word-attention figure, written as PNG with Pillow.

Images are tensors in [-1, 1] (G's Tanh output; values outside are clipped), B x 3 x H x W or
3 x H x W. Attention maps are T x h x w (any h, w: upsampled bilinearly to the image).

The attention figure (``attention_figure``) has one row per generator stage with attention; a row
is the stage's image followed by one panel per word, the word's attention map rescaled to 0..1
and overlaid on the image, each panel captioned (stage or word) in PIL's default font.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor

LABEL_HEIGHT = 14
"""Height in pixels of the text strip above each panel of the attention figure."""

PADDING = 2
"""Pixels between panels (grids and attention figure)."""


def to_uint8(images: Tensor) -> np.ndarray:
    """Images in [-1, 1], B x 3 x H x W or 3 x H x W -> uint8 B x H x W x 3 or H x W x 3."""
    x = images.detach().float().cpu().clamp(-1.0, 1.0)
    x = ((x + 1.0) * 127.5).round().to(torch.uint8)
    return x.movedim(-3, -1).numpy()


def make_grid(images: Tensor, nrow: int | None = None, padding: int = PADDING) -> Image.Image:
    """Images in [-1, 1] B x 3 x H x W -> one RGB image, ``nrow`` images per row (default about
    sqrt(B)), ``padding`` black pixels between and around them."""
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be B x 3 x H x W, got shape {tuple(images.shape)}")
    b, _, h, w = images.shape
    if b == 0:
        raise ValueError("no images to put in a grid")
    ncol = nrow if nrow is not None else math.ceil(math.sqrt(b))
    if ncol < 1:
        raise ValueError(f"nrow must be >= 1, got {nrow}")
    nrows = math.ceil(b / ncol)
    grid = np.zeros((padding + nrows * (h + padding), padding + ncol * (w + padding), 3), np.uint8)
    for i, img in enumerate(to_uint8(images)):
        top = padding + (i // ncol) * (h + padding)
        left = padding + (i % ncol) * (w + padding)
        grid[top : top + h, left : left + w] = img
    return Image.fromarray(grid)


def save_image_grid(
    images: Tensor, path: str | Path, nrow: int | None = None, padding: int = PADDING
) -> Path:
    """Write ``make_grid(images, nrow, padding)`` as PNG to ``path`` (parents created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    make_grid(images, nrow, padding).save(path, format="PNG")
    return path


def save_image(image: Tensor, path: str | Path) -> Path:
    """Write one image in [-1, 1] (3 x H x W) as PNG to ``path`` (parents created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(to_uint8(image)).save(path, format="PNG")
    return path


def overlay_attention(image: Tensor, attn: Tensor) -> Tensor:
    """Image in [-1, 1] (3 x H x W) and attention maps T x h x w -> T x 3 x H x W in [-1, 1].

    Each map is upsampled bilinearly to H x W and rescaled to a = 0..1 by its minimum and
    maximum, as the original's figure does (a uniform map gives a = 0); the panel
    dims the image where a is low and tints it red to yellow where a is high:
    out = 0.75 (0.4 + 0.6 a) image + 0.25 a (1, a, 0), with image and out in 0..1.
    """
    if image.dim() != 3 or attn.dim() != 3:
        raise ValueError(
            f"image must be 3 x H x W and attn T x h x w, got {tuple(image.shape)}, "
            f"{tuple(attn.shape)}"
        )
    img = (image.detach().float().cpu().clamp(-1, 1) + 1) / 2  # 0..1
    a = attn.detach().float().cpu()[:, None]
    a = F.interpolate(a, size=img.shape[-2:], mode="bilinear", align_corners=False)
    low = a.amin(dim=(2, 3), keepdim=True)
    a = (a - low) / (a.amax(dim=(2, 3), keepdim=True) - low).clamp_min(1e-12)  # T x 1 x H x W
    heat = a * torch.cat([torch.ones_like(a), a, torch.zeros_like(a)], dim=1)
    out = 0.75 * (0.4 + 0.6 * a) * img + 0.25 * heat
    return out * 2 - 1


def _font() -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=11)
    except TypeError:  # Pillow < 10.1: fixed-size bitmap font only
        return ImageFont.load_default()


def _fit(draw: ImageDraw.ImageDraw, text: str, font: object, width: int) -> str:
    """``text``, shortened with '..' until it fits ``width`` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while len(text) > 1 and draw.textlength(text + "..", font=font) > width:
        text = text[:-1]
    return text + ".."


def attention_figure(
    images: Sequence[Tensor],
    att_maps: Sequence[Tensor],
    words: Sequence[str],
    panel_size: int | None = None,
    row_labels: Sequence[str] | None = None,
) -> Image.Image:
    """The attention figure of one caption.

    images: one image per row (3 x H x W in [-1, 1], the image the row's attention produced);
    att_maps: one T x h x w tensor per row (T >= len(words): maps beyond the caption's words,
    i.e. padding, are ignored); words: the caption's words. Every panel is resized to
    ``panel_size`` (default: the largest image side, at least 64) and captioned above with
    ``row_labels[i]`` (default ``"stage {i + 2}"``) for the image or the word for its map.

    Size: width = PADDING + (1 + len(words)) * (panel + PADDING),
    height = PADDING + rows * (LABEL_HEIGHT + panel + PADDING).
    """
    if len(images) != len(att_maps) or not images:
        raise ValueError(f"need one image per attention map, got {len(images)}, {len(att_maps)}")
    if not words:
        raise ValueError("the caption has no words to show")
    for i, att in enumerate(att_maps):
        if att.dim() != 3 or att.shape[0] < len(words):
            raise ValueError(
                f"att_maps[{i}] must be T x h x w with T >= {len(words)} words, "
                f"got {tuple(att.shape)}"
            )
    labels = list(row_labels) if row_labels is not None else [
        f"stage {i + 2}" for i in range(len(images))
    ]  # fmt: skip
    size = panel_size or max(64, *(max(img.shape[-2:]) for img in images))
    ncol = 1 + len(words)
    cell_h = LABEL_HEIGHT + size + PADDING
    fig = Image.new("RGB", (PADDING + ncol * (size + PADDING), PADDING + len(images) * cell_h))
    draw = ImageDraw.Draw(fig)
    font = _font()
    for row, (img, att) in enumerate(zip(images, att_maps)):
        panels = torch.cat([img[None].float().cpu(), overlay_attention(img, att[: len(words)])])
        panels = F.interpolate(panels, size=(size, size), mode="bilinear", align_corners=False)
        top = PADDING + row * cell_h
        for col, (panel, text) in enumerate(zip(to_uint8(panels), [labels[row], *words])):
            left = PADDING + col * (size + PADDING)
            label = _fit(draw, text, font, size - 2)
            draw.text((left + 1, top + 1), label, fill="white", font=font)
            fig.paste(Image.fromarray(panel), (left, top + LABEL_HEIGHT))
    return fig


def save_attention_figure(
    path: str | Path,
    images: Sequence[Tensor],
    att_maps: Sequence[Tensor],
    words: Sequence[str],
    panel_size: int | None = None,
    row_labels: Sequence[str] | None = None,
) -> Path:
    """Write ``attention_figure(images, att_maps, words, panel_size, row_labels)`` as PNG."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    attention_figure(images, att_maps, words, panel_size, row_labels).save(path, format="PNG")
    return path
