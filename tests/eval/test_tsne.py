"""The t-SNE figure: grid placement, the thumbnail grid, the scatter plot and ``eval tsne``."""

import json
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from attngan_fast.eval import tsne
from attngan_fast.eval.cli import main

pytest.importorskip("sklearn")
pytest.importorskip("matplotlib")


def test_positions_on_a_grid_keep_their_cells():
    cols, rows = 5, 3
    c, r = np.meshgrid(np.arange(cols), np.arange(rows))
    cells = np.stack([c.ravel(), r.ravel()], axis=1)
    order = np.random.default_rng(0).permutation(len(cells))
    xy = np.stack([cells[:, 0] * 7.0 - 3, -cells[:, 1] * 2.0], axis=1)  # y up, row 0 on top
    assert (tsne.grid_cells(xy[order], cols, rows) == cells[order]).all()


def test_each_image_gets_its_own_cell():
    xy = np.random.default_rng(1).normal(size=(23, 2))
    xy[:5] = 0.0  # equal positions still get distinct cells
    cols, rows = tsne.grid_shape(len(xy))
    assert (cols, rows) == (5, 5)
    cells = tsne.grid_cells(xy, cols, rows)
    assert len({tuple(c) for c in cells}) == 23
    assert cells[:, 0].max() < cols and cells[:, 1].max() < rows
    with pytest.raises(ValueError, match="do not fit"):
        tsne.grid_cells(xy, 4, 4)


def test_thumbnails_land_in_their_cells():
    thumbs = torch.stack([torch.full((3, 4, 4), v) for v in (-1.0, 0.0, 1.0)])
    grid = np.asarray(tsne.thumbnail_grid(thumbs, np.array([[1, 0], [0, 1], [1, 1]]), 2, 2))
    assert grid.shape == (8, 8, 3)
    assert (grid[:4, :4] == 255).all()  # empty cell: background
    assert (grid[:4, 4:] == 0).all() and (grid[4:, :4] == 128).all() and (grid[4:, 4:] == 255).all()
    assert tsne.thumbnails(torch.zeros(2, 3, 32, 32), 8).shape == (2, 3, 8, 8)


def _kl_by_hand(x, xy, perplexity):
    """KL(P || Q) of a layout (van der Maaten 2014, as scikit-learn's Barnes-Hut t-SNE sets it
    up): P from each point's 3 * perplexity nearest neighbours, Gaussian with the variance that
    gives the perplexity (natural-log entropy), symmetrised and normalised; Q Student-t over all
    pairs. scikit-learn reports a Barnes-Hut estimate of it (theta 0.5): equal within 2 % (a
    layout of the same points at random scores about 8 times more)."""
    n = len(x)
    d = ((x[:, None] - x[None]) ** 2).sum(-1)
    k = min(n - 1, int(3 * perplexity + 1))
    p = np.zeros((n, n))
    for i in range(n):
        nn = np.argsort(d[i])[1 : k + 1]
        lo, hi, beta = 0.0, np.inf, 1.0
        for _ in range(60):
            w = np.exp(-(d[i, nn] - d[i, nn].min()) * beta)
            row = w / w.sum()
            entropy = -(row * np.log(row, out=np.full(k, -700.0), where=row > 0)).sum()
            if entropy > np.log(perplexity):
                lo, beta = beta, beta * 2 if hi == np.inf else (beta + hi) / 2
            else:
                hi, beta = beta, (beta + lo) / 2
        p[i, nn] = row
    p = p + p.T
    p /= p.sum()
    q = 1 / (1 + ((xy[:, None] - xy[None]) ** 2).sum(-1))
    np.fill_diagonal(q, 0)
    q /= q.sum()
    mask = p > 0
    return float((p[mask] * np.log(p[mask] / q[mask])).sum())


def test_tsne_keeps_clusters_apart():
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(15, 32, generator=gen) * 0.05 + torch.eye(32)[0]
    b = torch.randn(15, 32, generator=gen) * 0.05 + torch.eye(32)[1]
    x = torch.cat([a, b])
    xy, kl = tsne.tsne_2d(x, perplexity=5, seed=0)
    assert xy.shape == (30, 2)
    assert kl == pytest.approx(
        _kl_by_hand(torch.nn.functional.normalize(x).numpy(), xy, 5), rel=0.02
    )
    dist = np.linalg.norm(xy[:, None] - xy[None], axis=2)
    np.fill_diagonal(dist, np.inf)
    nearest = dist.argmin(axis=1)
    assert ((nearest < 15) == (np.arange(30) < 15)).all()
    with pytest.raises(ValueError, match="N >= 4"):
        tsne.tsne_2d(torch.randn(3, 8))


def test_attribute_scatter_size(tmp_path):
    xy = np.random.default_rng(2).normal(size=(10, 2))
    names = ["red", None, "blue", "red", None, "white", "red", "blue", None, "red"]
    colours = {"red": (220, 40, 40), "blue": (40, 85, 205), "white": (245, 245, 245)}
    fig = tsne.attribute_scatter(xy, names, colours, "test", size_px=(600, 400))
    fig.savefig(tmp_path / "s.png", format="png")
    with Image.open(tmp_path / "s.png") as image:
        assert image.size == (600, 400)
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels == ["not named (3)", "red (4)", "blue (2)", "white (1)"]


def test_tsne_command_writes_the_grid_and_the_attribute_plot(run, capsys):
    folder, tmp = run
    out = tmp / "figs" / "tsne.png"
    args = ["tsne", "--checkpoint", str(folder), "--n-images", "14", "--thumb", "16"]
    assert main([*args, "--batch-size", "5", "--out", str(out), "--attribute", "wing"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["grid"] == [4, 4] and record["n_images"] == 14
    with Image.open(out) as image:
        assert image.format == "PNG" and image.size == (4 * 16, 4 * 16)
        pixels = np.asarray(image)
    cells = pixels.reshape(4, 16, 4, 16, 3).transpose(0, 2, 1, 3, 4).reshape(16, -1)
    assert (cells == 255).all(axis=1).sum() == 2  # 14 images, 16 cells: two stay empty
    plot = tmp / "figs" / "tsne_wing.png"
    assert record["attribute_png"] == str(plot)
    with Image.open(plot) as image:
        assert image.size == (900, 750)


def test_tsne_without_the_extra_says_how_to_install_it(run, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "sklearn.manifold", None)
    with pytest.raises(SystemExit) as exc:
        main(["tsne", "--checkpoint", str(run[0])])
    assert exc.value.code == 2
    assert 'pip install "attngan-fast[tsne]"' in capsys.readouterr().err


@pytest.mark.gpu  # Inception-v3 at 299 px: half a minute on 2 CPU cores
def test_tsne_command_on_inception_features(run, capsys):
    from attngan_fast.models.inception import Inception3

    folder, tmp = run
    weights = tmp / "inception_tsne.pth"
    torch.save(Inception3(num_classes=10).state_dict(), weights)
    out = tmp / "tsne_inception.png"
    args = ["tsne", "--checkpoint", str(folder), "--n-images", "5", "--thumb", "8"]
    args += ["--features", "inception", "--inception-weights", str(weights), "--out", str(out)]
    args += ["--device", "cuda"]
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out)["features"] == "inception"
    with Image.open(out) as image:
        assert image.size == (3 * 8, 2 * 8)
