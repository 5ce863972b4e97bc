"""The photo-crops proxy task: which of 15 photographs a random crop comes from.

A seeded, offline classification task where the input resolution, the depth and the width of a
network each change its accuracy (unlike the 8x8 digits, which upsampling cannot enrich).  Every
sample is a square crop of one grey 256 px photograph (``effnet/data/photos.npz``, CC0/public
domain images bundled with scikit-image; PHOTOS.md) taken at a random position, a random scale
(a side of 15-35% of the photograph, 38-90 source pixels), a random rotation, with random
contrast, brightness and pixel noise, rendered at 64 px.  A model reading 32 px sees half the
detail of one reading 64 px; textures (brick, gravel, grass) and small print need the detail.

``effnet train --data photos`` and ``effnet search`` use it; docs/search.md calibrates it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from importlib import resources

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class PhotoTask:
    """How samples are drawn; the defaults are the calibrated proxy of docs/search.md."""

    train_per_class: int = 160  # 2,400 training crops
    val_per_class: int = 60  # 900 validation crops
    size: int = 64  # rendered side in pixels: the most detail any model of the search reads
    scale: tuple[float, float] = (0.25, 0.5)  # crop side as a share of the photograph's side
    contrast: tuple[float, float] = (0.6, 1.4)  # multiplies deviations from the crop's mean
    brightness: float = 0.15  # added offset, uniform in +-this (on a 0..1 scale)
    noise: float = 0.04  # standard deviation of Gaussian pixel noise (0..1 scale)


def load_photos() -> tuple[np.ndarray, list[str]]:
    """The 15 grey photographs (15, 256, 256) uint8 and their names."""
    with resources.files("effnet.data").joinpath("photos.npz").open("rb") as f, np.load(f) as z:
        return z["images"], [str(n) for n in z["names"]]


def render_crops(photos: torch.Tensor, labels: torch.Tensor, task: PhotoTask, generator: torch.Generator
                 ) -> torch.Tensor:
    """Crops of ``photos[labels]`` (float (P, 1, H, W) in 0..1) as uint8 (N, 3, size, size), one per label."""
    n = len(labels)
    u = lambda *shape: torch.rand(*shape, generator=generator)
    side = task.scale[0] + (task.scale[1] - task.scale[0]) * u(n)
    angle = 2 * math.pi * u(n)
    # Keep the rotated square inside the photograph: its half-diagonal is side * sqrt(2) (normalised units).
    room = (1 - side * math.sqrt(2)).clamp(min=0)
    shift = (2 * u(n, 2) - 1) * room[:, None]
    cos, sin = torch.cos(angle) * side, torch.sin(angle) * side
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, [n, 1, task.size, task.size], align_corners=False)
    crops = F.grid_sample(photos[labels], grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    mean = crops.mean(dim=(2, 3), keepdim=True)
    contrast = task.contrast[0] + (task.contrast[1] - task.contrast[0]) * u(n, 1, 1, 1)
    brightness = task.brightness * (2 * u(n, 1, 1, 1) - 1)
    crops = (crops - mean) * contrast + mean + brightness
    crops = crops + task.noise * torch.randn(crops.shape, generator=generator)
    grey = (crops.clamp(0, 1) * 255).round().to(torch.uint8)
    return grey.expand(-1, 3, -1, -1).contiguous()


def make_split(task: PhotoTask, seed: int) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor],
                                                   list[str]]:
    """Seeded train and validation crops ((images, targets) each) and the class names."""
    images, names = load_photos()
    photos = torch.from_numpy(images).float().div(255)[:, None]
    out = []
    for part, per_class in enumerate((task.train_per_class, task.val_per_class)):
        g = torch.Generator().manual_seed(seed * 2 + part)  # train and val never share a draw
        labels = torch.arange(len(names)).repeat_interleave(per_class)
        out.append((render_crops(photos, labels, task, g), labels))
    return out[0], out[1], names
