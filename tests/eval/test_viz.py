"""Image grids and the word-attention figure, read back from the PNG files."""

import numpy as np
import pytest
import torch
from PIL import Image

from attngan_fast.viz import (
    LABEL_HEIGHT,
    PADDING,
    attention_figure,
    overlay_attention,
    save_attention_figure,
    save_image_grid,
    to_uint8,
)


def test_to_uint8_maps_minus_one_to_one_onto_0_255_and_clips():
    x = torch.tensor([-2.0, -1.0, 0.0, 1.0, 3.0]).view(1, 1, 5).expand(3, 1, 5)
    assert to_uint8(x)[0, :, 0].tolist() == [0, 0, 128, 255, 255]


def test_grid_places_every_image(tmp_path):
    colours = torch.linspace(-1, 1, 5)
    images = colours.view(5, 1, 1, 1).expand(5, 3, 6, 8)
    path = save_image_grid(images, tmp_path / "sub" / "grid.png", nrow=3)
    grid = np.asarray(Image.open(path))
    assert grid.shape == (PADDING + 2 * (6 + PADDING), PADDING + 3 * (8 + PADDING), 3)
    for i in range(5):
        top, left = PADDING + (i // 3) * (6 + PADDING), PADDING + (i % 3) * (8 + PADDING)
        block = grid[top : top + 6, left : left + 8]
        assert (block == to_uint8(images[i])).all()
    assert (grid[PADDING + 6 + PADDING :, PADDING + 2 * (8 + PADDING) :] == 0).all()  # slot 6 empty


def test_overlay_highlights_the_attended_region():
    image = torch.zeros(3, 16, 16)
    attn = torch.zeros(2, 4, 4)
    attn[0, 0, 0] = 1.0  # word 0 looks at the top-left corner
    attn[1, 3, 3] = 0.01  # word 1 at the bottom-right (rescaled to 0..1)
    out = overlay_attention(image, attn)
    assert out.shape == (2, 3, 16, 16) and out.min() >= -1 and out.max() <= 1
    assert out[0, :, 0, 0].mean() > out[0, :, 15, 15].mean()
    assert out[1, :, 15, 15].mean() > out[1, :, 0, 0].mean()


def test_attention_figure_has_a_panel_per_word_and_a_row_per_stage(tmp_path):
    words = ["this", "bird", "has", "black", "wings"]
    images = [torch.rand(3, 32, 32) * 2 - 1, torch.rand(3, 64, 64) * 2 - 1]
    att_maps = [torch.rand(7, 16, 16), torch.rand(7, 32, 32)]  # 7 >= 5 words: padding ignored
    path = save_attention_figure(tmp_path / "att.png", images, att_maps, words)
    fig = np.asarray(Image.open(path))
    panel = 64
    assert fig.shape == (
        PADDING + 2 * (LABEL_HEIGHT + panel + PADDING),
        PADDING + (1 + len(words)) * (panel + PADDING),
        3,
    )
    for row in range(2):
        top = PADDING + row * (LABEL_HEIGHT + panel + PADDING)
        for col in range(1 + len(words)):
            left = PADDING + col * (panel + PADDING)
            label = fig[top : top + LABEL_HEIGHT, left : left + panel]
            assert label.max() > 128, f"no caption text over panel {row}, {col}"
            image = fig[top + LABEL_HEIGHT : top + LABEL_HEIGHT + panel, left : left + panel]
            assert image.std() > 0, f"panel {row}, {col} is blank"
    small = attention_figure(images, att_maps, words[:2], panel_size=40)
    assert small.size == (PADDING + 3 * (40 + PADDING), PADDING + 2 * (LABEL_HEIGHT + 40 + PADDING))


def test_attention_figure_rejects_bad_inputs():
    img, att = torch.zeros(3, 8, 8), torch.rand(2, 4, 4)
    with pytest.raises(ValueError, match="T >= 3"):
        attention_figure([img], [att], ["a", "b", "c"])
    with pytest.raises(ValueError, match="one image per"):
        attention_figure([img, img], [att], ["a"])
    with pytest.raises(ValueError, match="no words"):
        attention_figure([img], [att], [])
