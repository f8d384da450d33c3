"""The talk's t-SNE figure: generated images laid on a grid by the 2-D t-SNE map of their features.

    xy, kl = tsne_2d(features)                        # N x D features -> N x 2 positions
    cols, rows = grid_shape(len(xy))
    cells = grid_cells(xy, cols, rows)                # N x 2 (column, row), one image per cell
    thumbnail_grid(thumbnails, cells, cols, rows).save("tsne.png")
    attribute_scatter(xy, names, title="body colour named in the caption").savefig("body.png")

Features are an image encoder's global codes (DAMSM) or Inception pool3 features of the images;
t-SNE (scikit-learn) runs on them L2-normalised, so it keeps the cosine neighbourhoods the DAMSM
scores use. Each image then takes the grid cell closest to its t-SNE position, under the
constraint of one image per cell (a linear assignment, SciPy's ``linear_sum_assignment``, as in
the t-SNE grid figures of the field), so nearby images stay nearby and none overlap.

Needs the ``tsne`` extra: ``pip install "attngan-fast[tsne]"`` (scikit-learn, which brings SciPy,
and matplotlib for the scatter plot).
"""

from __future__ import annotations

import importlib
import math
from collections import Counter
from collections.abc import Sequence
from types import ModuleType
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from attngan_fast.viz import to_uint8

MAX_GRID_IMAGES = 4096
"""The assignment is cubic in the number of images: 4096 take a minute and 130 MB."""

NOT_NAMED = "not named"


class MissingExtraError(ImportError):
    """A module of the ``tsne`` extra is not installed."""


def require(module: str) -> ModuleType:
    """``importlib.import_module(module)``, or MissingExtraError saying how to install it."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        raise MissingExtraError(
            f"t-SNE needs the tsne extra ({exc.name} is not installed): "
            'pip install "attngan-fast[tsne]"'
        ) from None


def tsne_2d(
    features: Tensor | np.ndarray, perplexity: float = 30.0, seed: int = 0
) -> tuple[np.ndarray, float]:
    """t-SNE of N x D features (rows L2-normalised first) -> (N x 2 positions, final KL
    divergence). The perplexity is lowered to (N - 1) / 3 for small N (it must stay below N)."""
    manifold = require("sklearn.manifold")
    x = torch.as_tensor(features, dtype=torch.float64)
    if x.dim() != 2 or len(x) < 4:
        raise ValueError(f"t-SNE needs N x D features with N >= 4, got {tuple(x.shape)}")
    x = F.normalize(x, dim=1).numpy()
    tsne = manifold.TSNE(
        n_components=2,
        perplexity=min(perplexity, (len(x) - 1) / 3),
        init="pca",
        learning_rate="auto",
        random_state=seed,
    )
    xy = tsne.fit_transform(x)
    return xy.astype(np.float64), float(tsne.kl_divergence_)


def grid_shape(n: int, cols: int | None = None) -> tuple[int, int]:
    """(columns, rows) of a grid for ``n`` images: ``cols`` (default ceil(sqrt(n))) wide."""
    if n < 1:
        raise ValueError(f"need at least one image, got {n}")
    cols = cols or math.ceil(math.sqrt(n))
    return cols, math.ceil(n / cols)


def grid_cells(xy: np.ndarray, cols: int, rows: int) -> np.ndarray:
    """Positions N x 2 -> grid cells N x 2 (column, row), one image per cell, minimising the sum
    of squared distances between the positions (scaled to the grid's box) and the cells' centres.
    Row 0 is the top, at the largest y (as in a plot of the positions)."""
    optimize = require("scipy.optimize")
    xy = np.asarray(xy, dtype=np.float64)
    n = len(xy)
    if xy.ndim != 2 or xy.shape[1] != 2:
        raise ValueError(f"positions must be N x 2, got {xy.shape}")
    if n > cols * rows:
        raise ValueError(f"{n} images do not fit a {cols} x {rows} grid")
    if n > MAX_GRID_IMAGES:
        raise ValueError(f"at most {MAX_GRID_IMAGES} images on a grid, got {n}")
    low, high = xy.min(axis=0), xy.max(axis=0)
    unit = (xy - low) / np.where(high > low, high - low, 1.0)  # 0..1 on both axes
    unit[:, 1] = 1.0 - unit[:, 1]
    c, r = np.meshgrid(np.arange(cols), np.arange(rows))
    centres = np.stack([(c.ravel() + 0.5) / cols, (r.ravel() + 0.5) / rows], axis=1)
    cost = ((unit[:, None, :] - centres[None, :, :]) ** 2).sum(axis=2)  # N x cells
    images, cells = optimize.linear_sum_assignment(cost)
    out = np.empty((n, 2), dtype=np.int64)
    out[images, 0] = cells % cols
    out[images, 1] = cells // cols
    return out


def thumbnails(images: Tensor, size: int) -> Tensor:
    """Images in [-1, 1], B x 3 x H x W -> B x 3 x size x size (antialiased), on the CPU."""
    x = images.detach().float().cpu()
    if x.shape[-2:] == (size, size):
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)


def thumbnail_grid(
    thumbs: Tensor, cells: np.ndarray, cols: int, rows: int, background: int = 255
) -> Image.Image:
    """Thumbnails N x 3 x s x s in [-1, 1] at their cells (N x 2, column and row) -> one RGB
    image of cols * s x rows * s pixels; empty cells are ``background`` grey."""
    s = thumbs.shape[-1]
    if len(thumbs) != len(cells):
        raise ValueError(f"{len(thumbs)} thumbnails for {len(cells)} cells")
    canvas = np.full((rows * s, cols * s, 3), background, dtype=np.uint8)
    for pixels, (col, row) in zip(to_uint8(thumbs), cells):
        canvas[row * s : (row + 1) * s, col * s : (col + 1) * s] = pixels
    return Image.fromarray(canvas)


def attribute_scatter(
    xy: np.ndarray,
    names: Sequence[str | None],
    colours: dict[str, Sequence[int]],
    title: str,
    size_px: tuple[int, int] = (900, 750),
) -> Any:
    """The t-SNE positions N x 2 as points coloured by ``colours[names[i]]`` (RGB 0..255); None
    is drawn small and grey ("not named"). A legend gives each value's count. Returns a matplotlib
    Figure (no pyplot state): ``fig.savefig("plot.png")`` writes ``size_px`` pixels."""
    figure = require("matplotlib.figure")
    dpi = 100
    fig = figure.Figure(figsize=(size_px[0] / dpi, size_px[1] / dpi), dpi=dpi)
    ax = fig.add_subplot()
    xy = np.asarray(xy)
    labels = [NOT_NAMED if name is None else name for name in names]
    counts = Counter(labels)
    order = [NOT_NAMED] + sorted((k for k in counts if k != NOT_NAMED), key=list(colours).index)
    for label in order:
        if label not in counts:
            continue
        chosen = np.array([lab == label for lab in labels])
        named = label != NOT_NAMED
        rgb = np.array(colours[label]) / 255 if named else np.array([0.8, 0.8, 0.8])
        ax.scatter(
            xy[chosen, 0], xy[chosen, 1], s=22 if named else 8, color=rgb,
            edgecolors="#555555" if named else "none", linewidths=0.4,
            label=f"{label} ({counts[label]})", zorder=2 if named else 1,
        )  # fmt: skip
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False, fontsize=9)
    fig.subplots_adjust(left=0.03, right=0.78, top=0.93, bottom=0.03)
    return fig
