"""LSP: class-wise linearly separable patch noise (Yu et al., KDD 2022, "Availability attacks create shortcuts").

Per task, each class c gets one point z_c = class_sep·s_c + g_c in a low-dimensional patch space of
D = ⌈H/p⌉·⌈W/p⌉·channels values (s_c a distinct random ±1 hypercube vertex, g_c ~ N(0, I), as in
scikit-learn's make_classification with every feature informative). z_c is upsampled to the image by
repeating each value over a p×p patch, p = max(1, H//4) (8 for 32 px, as LSP), then normalised to
unit L2. L2 budget (paper): ‖δ‖₂ = (6/255)·√(H·W·C), i.e. an RMS of 6/255 per pixel, then clipped to ε.
"""

from __future__ import annotations

import math

import numpy as np

from mtlue.errors import ProtectionError
from mtlue.protect.classwise import ClasswiseMethod, unit_l2

CLASS_SEP = 10.0  # LSP's make_classification(class_sep=10)
RMS_PER_PIXEL = 6.0 / 255.0  # LSP cifar_train.py --eps 6


def patch_size(height: int, width: int) -> tuple:
    """(p_h, p_w) = (max(1, H//4), max(1, W//4)): a 4×4 grid of patches (8 px for 32 px images)."""
    return max(1, height // 4), max(1, width // 4)


def separable_class_points(num_classes: int, dims: int, rng: np.random.Generator,
                           class_sep: float = CLASS_SEP) -> np.ndarray:
    """(num_classes, dims) points at distinct ±class_sep hypercube vertices plus unit Gaussian offsets."""
    if dims < 63 and num_classes > 2 ** dims:
        raise ProtectionError(f"LSP: {num_classes} classes need more than the {2 ** dims} vertices of a "
                              f"{dims}-dimensional patch space; the image is too small")
    vertices: list = []
    seen: set = set()
    while len(vertices) < num_classes:
        signs = rng.integers(0, 2, size=dims, dtype=np.int8)
        key = signs.tobytes()
        if key not in seen:
            seen.add(key)
            vertices.append(signs.astype(np.float64) * 2.0 - 1.0)
    return class_sep * np.stack(vertices) + rng.standard_normal((num_classes, dims))


def upsample_patches(points: np.ndarray, grid: tuple, patch: tuple, image_shape: tuple) -> np.ndarray:
    """(P, grid_h·grid_w·C) points → (P, H, W, C) images of constant p_h×p_w patches (cropped to H×W)."""
    height, width, channels = image_shape
    cells = points.reshape(len(points), grid[0], grid[1], channels)
    images = np.repeat(np.repeat(cells, patch[0], axis=1), patch[1], axis=2)
    return images[:, :height, :width, :]


class LSPMethod(ClasswiseMethod):
    """Linearly separable synthetic patches per (task, class), fused over tasks; no surrogate."""

    name = "lsp"
    l2_rule = "(6/255)·sqrt(H·W·C) on the [0,1] scale (LSP: RMS 6/255 per pixel)"

    def default_l2(self, image_shape: tuple) -> float:
        height, width, channels = image_shape
        return RMS_PER_PIXEL * math.sqrt(height * width * channels)

    def build_patterns(self, task, position: int, image_shape: tuple) -> np.ndarray:
        height, width, channels = image_shape
        patch = patch_size(height, width)
        grid = (math.ceil(height / patch[0]), math.ceil(width / patch[1]))
        points = separable_class_points(task.num_classes, grid[0] * grid[1] * channels, self.task_generator(position))
        return unit_l2(upsample_patches(points, grid, patch, image_shape))

    def method_fields(self) -> dict:
        height, width, _ = self.context.source.image_shape
        return {"patch_size": list(patch_size(height, width)), "class_sep": CLASS_SEP,
                "pattern_rule": "±class_sep hypercube vertex + N(0,1) per patch cell and channel, unit L2"}
