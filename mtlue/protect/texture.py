"""texture: class-wise stationary tiles, one task per pixel (mtlue's own class-wise method).

Per (task, class) a seeded random ±1 tile of `period`×`period` pixels and every channel, repeated over the
image. The tasks share the image by interleave fusion (mtlue.protect.classwise): each position of the tile
belongs to one protected task, so every pixel moves by the full ±ε and each task's pattern keeps its full
size on its pixels instead of 1/K of it, as a sum or average of K patterns would. Because the pattern
repeats every `period` pixels, a random crop or a shift only changes its phase: the attacker's standard
augmentation does not remove it (a fixed-position pattern dies under a shift). No surrogate is trained.
"""

from __future__ import annotations

import numpy as np

from mtlue.protect.classwise import ClasswiseMethod


def tiled(tile: np.ndarray, height: int, width: int) -> np.ndarray:
    """A (p, p, C) tile repeated over (height, width, C)."""
    period_h, period_w = tile.shape[:2]
    return np.tile(tile, (-(-height // period_h), -(-width // period_w), 1))[:height, :width]


class TextureMethod(ClasswiseMethod):
    """Stationary ±1 tiles per (task, class), interleaved over tasks, scaled to ±ε (L∞)."""

    name = "texture"
    l2_rule = "none: texture patterns are ±1, scaled to ε per pixel (L∞)"

    def default_l2(self, image_shape: tuple) -> float:
        height, width, channels = image_shape
        return self.config.eps * float(np.sqrt(height * width * channels))

    def build_patterns(self, task, position: int, image_shape: tuple) -> np.ndarray:
        height, width, channels = image_shape
        period = min(self.settings.period, height, width)
        signs = self.task_generator(position).integers(0, 2, size=(task.num_classes, period, period, channels))
        tiles = signs.astype(np.float32) * 2.0 - 1.0
        return np.stack([tiled(t, height, width) for t in tiles])

    def method_fields(self) -> dict:
        return {"period": self.settings.period, "pattern_rule": "seeded random ±1 tile per (task, class), repeated"}
