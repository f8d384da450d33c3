"""The image side of a sample: bounding-box crop, the original's augmentation, one copy per branch.

Same steps as the original (torchvision ``Resize(int(s·76/64))``, ``RandomCrop(s)``,
``RandomHorizontalFlip()``, then ``Resize`` to each smaller branch size), written with PIL. Random
draws come from torch's global generator, so ``torch.manual_seed`` fixes them and DataLoader
workers (each seeded by torch) draw differently.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

BBox = tuple[float, float, float, float]  # x-left, y-top, width, height in pixels (CUB's order)


def branch_sizes(base_size: int = 64, branch_num: int = 3) -> list[int]:
    """Image size of each generator branch: ``base_size · 2^i`` (64, 128, 256 by default)."""
    if base_size < 1 or branch_num < 1:
        raise ValueError(f"base_size and branch_num must be >= 1, got {base_size}, {branch_num}")
    return [base_size * 2**i for i in range(branch_num)]


def crop_to_bbox(img: Image.Image, bbox: BBox) -> Image.Image:
    """Square of side 2r around the box centre, r = int(0.75·max(w, h)), clamped to the image."""
    x, y, w, h = (int(v) for v in bbox)
    r = int(max(w, h) * 0.75)
    cx, cy = int((2 * x + w) / 2), int((2 * y + h) / 2)
    width, height = img.size
    return img.crop((max(0, cx - r), max(0, cy - r), min(width, cx + r), min(height, cy + r)))


def resize_shorter_side(img: Image.Image, size: int) -> Image.Image:
    """Bilinear resize so the shorter side is ``size`` (torchvision's ``Resize(int)``)."""
    w, h = img.size
    if w <= h:
        new = (size, int(size * h / w))
    else:
        new = (int(size * w / h), size)
    return img if new == (w, h) else img.resize(new, Image.Resampling.BILINEAR)


def to_tensor(img: Image.Image) -> torch.Tensor:
    """RGB PIL image (H×W) → float32 tensor 3×H×W with pixels in [-1, 1]."""
    arr = torch.from_numpy(np.array(img, dtype=np.uint8))
    return arr.permute(2, 0, 1).float().div_(127.5).sub_(1.0).contiguous()


class BranchImages:
    """Turn a loaded RGB image into the list of per-branch tensors of one sample.

    Args:
        base_size: size of the first branch (64 for the GAN, 299 for DAMSM pretraining).
        branch_num: number of branches; sizes are ``base_size · 2^i``.
        augment: random crop and flip as in training; False takes the centre crop, no flip.
        flip: with ``augment``, mirror half the images left-right (the original always does);
            False keeps the random crop only (data whose objects all face one way).

    Calling it with ``(img, bbox)`` returns ``branch_num`` tensors 3×s×s in [-1, 1], s = 64, 128,
    256 by default; the smaller ones are downscaled from the largest.
    """

    def __init__(
        self, base_size: int = 64, branch_num: int = 3, augment: bool = True, flip: bool = True
    ):
        self.sizes = branch_sizes(base_size, branch_num)
        self.augment = augment
        self.flip = flip

    @property
    def load_size(self) -> int:
        """Shorter side after the first resize: int(s·76/64), s the largest size (304 for 256)."""
        return int(self.sizes[-1] * 76 / 64)

    def __call__(self, img: Image.Image, bbox: BBox | None = None) -> list[torch.Tensor]:
        if bbox is not None:
            img = crop_to_bbox(img, bbox)
        img = resize_shorter_side(img, self.load_size)
        s = self.sizes[-1]
        w, h = img.size
        if self.augment:
            top = int(torch.randint(0, h - s + 1, (1,)))
            left = int(torch.randint(0, w - s + 1, (1,)))
        else:
            top, left = (h - s) // 2, (w - s) // 2
        img = img.crop((left, top, left + s, top + s))
        if self.augment and self.flip and float(torch.rand(1)) < 0.5:
            img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return [
            to_tensor(img if size == s else img.resize((size, size), Image.Resampling.BILINEAR))
            for size in self.sizes
        ]
