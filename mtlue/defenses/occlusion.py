"""Cutout (DeVries & Taylor, 2017): occlude one square patch per image with zeros.

The side is half the shorter image side (16 px on 32 px images, as APBench), placed uniformly at
random with the whole square inside the image, so every image loses exactly side² pixels
(the original clips squares at the border; keeping them inside makes the erased area fixed).
"""

from __future__ import annotations

import torch
from torch import nn

from mtlue.defenses.base import TransformDefense, check_images, uniform


def cutout_size(height: int, width: int) -> int:
    """Default side: 16 px for 32 px images, scaled with the shorter side (at least 1 px)."""
    return max(1, round(min(height, width) * 16 / 32))


def cutout(images: torch.Tensor, size: int | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """Zero a size×size square at a uniformly random in-image position in each image (all channels).

    Differentiable (multiplication by a 0/1 mask); positions come from `generator`.
    """
    check_images(images, "cutout")
    batch, _, height, width = images.shape
    side = cutout_size(height, width) if size is None else int(size)
    side = min(side, height, width)
    top = (uniform((batch,), generator, images.device) * (height - side + 1)).floor().long()
    left = (uniform((batch,), generator, images.device) * (width - side + 1)).floor().long()
    rows = torch.arange(height, device=images.device).view(1, height, 1)
    cols = torch.arange(width, device=images.device).view(1, 1, width)
    inside = ((rows >= top.view(-1, 1, 1)) & (rows < (top + side).view(-1, 1, 1))
              & (cols >= left.view(-1, 1, 1)) & (cols < (left + side).view(-1, 1, 1)))
    return images * (~inside).unsqueeze(1).to(images.dtype)


class Cutout(nn.Module):
    """Module form of `cutout`; holds the side (None = scale with the image) and the generator."""

    def __init__(self, size: int | None = None, generator: torch.Generator | None = None):
        super().__init__()
        self.size = size
        self.generator = generator

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return cutout(images, self.size, self.generator)

    def extra_repr(self) -> str:
        return f"size={self.size if self.size is not None else 'half the shorter side'}"


def cutout_defense(generator=None) -> TransformDefense:
    """The `cutout` training hook: one square per image, side half the shorter side."""
    return TransformDefense("cutout", Cutout(generator=generator))


__all__ = ["cutout", "cutout_size", "Cutout", "cutout_defense"]
