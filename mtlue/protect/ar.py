"""AR: class-wise autoregressive texture noise (Sandoval-Segura et al., NeurIPS 2022, "Autoregressive perturbations").

Per (task, class) and channel, a random causal 3×3 filter a (8 coefficients on the pixels above and to the
left, a ~ N(0, 1) rescaled to Σ|a| = 0.95 so the process stays bounded) drives a 2-D AR process over an
(H+4)×(W+4) field started from Gaussian noise w, filled in raster order:
    x[i, j] = Σ_k a_k · x[neighbour_k(i, j)] + w[i, j]
The first 4 rows and columns (start-up transient) are cropped and the H×W result normalised to unit L2.
L2 budget (paper): ‖δ‖₂ = 1.0 over the whole image on the [0, 1] scale, then clipped to ε.

As the AR paper, every image draws a fresh sample of its class's process (`fresh`, the default): the filter a is
the class's, the driving noise w is the image's own, seeded by (seed, task, global index), so the same image
always gets the same δ and two images of a class share the process, not the pattern. The AR filter (a 3×3
convolution with [a, −1]) annihilates every sample of its class, which is the mechanism. `fresh = false` keeps
one fixed sample per class (the earlier mtlue behaviour and the MTL-UE reference's table).
"""

from __future__ import annotations

import numpy as np

from mtlue.protect.classwise import ClasswiseMethod, fuse_patterns, unit_l2

WINDOW = 3
BORDER = 4  # cropped start-up rows/columns
COEFFICIENT_L1 = 0.95  # Σ|a| < 1: |x| ≤ max|w| / (1 − 0.95), never explodes
TARGET_L2 = 1.0


def random_filters(count: int, channels: int, rng: np.random.Generator) -> np.ndarray:
    """(count, channels, 8) causal 3×3 AR coefficients with Σ|a| = COEFFICIENT_L1 per filter."""
    coefficients = rng.standard_normal((count, channels, WINDOW * WINDOW - 1))
    return coefficients * (COEFFICIENT_L1 / np.abs(coefficients).sum(axis=-1, keepdims=True))


def autoregressive_fields(filters: np.ndarray, height: int, width: int, rng: np.random.Generator | None,
                          noise: np.ndarray | None = None) -> np.ndarray:
    """(P, H, W, C) AR textures, one per filter set in `filters` (P, C, 8), driven by `noise`
    (P, C, H+4, W+4; drawn from `rng` when not given)."""
    count, channels, _ = filters.shape
    if noise is None:
        noise = rng.standard_normal((count, channels, height + BORDER, width + BORDER))
    field = noise.copy()
    last = WINDOW - 1
    for i in range(last, height + BORDER):
        for j in range(last, width + BORDER):
            window = field[:, :, i - last:i + 1, j - last:j + 1].reshape(count, channels, -1)[..., :-1]
            field[:, :, i, j] = (window * filters).sum(axis=-1) + noise[:, :, i, j]
    return field[:, :, BORDER:, BORDER:].transpose(0, 2, 3, 1)


class ARMethod(ClasswiseMethod):
    """One autoregressive texture per (task, class), fused over tasks; no surrogate."""

    name = "ar"
    l2_rule = "1.0 on the [0,1] scale over the whole image (AR paper, independent of image size)"

    def __init__(self, config):
        super().__init__(config)
        self.filters: dict = {}  # task name -> (task position, (classes, channels, 8) filters)

    def default_l2(self, image_shape: tuple) -> float:
        return TARGET_L2

    def build_patterns(self, task, position: int, image_shape: tuple) -> np.ndarray:
        height, width, channels = image_shape
        rng = self.task_generator(position)
        filters = random_filters(task.num_classes, channels, rng)
        self.filters[task.name] = (position, filters)
        return unit_l2(autoregressive_fields(filters, height, width, rng))

    def delta_for(self, labels: dict, masks: dict, index=None) -> np.ndarray:
        if not self.settings.fresh or index is None:
            return super().delta_for(labels, masks, index)
        from mtlue.protect.classwise import scale_to_budget

        height, width, channels = self.table.image_shape
        chosen = {}
        for name in self.table.task_names:
            position, filters = self.filters[name]
            present = np.asarray(masks[name], dtype=bool)
            if name not in self.protected:
                chosen[name] = self.table.task_patterns(name, labels[name], masks[name], False)
                continue
            classes = self.table.class_indices(name, labels[name], present)
            noise = np.stack([self.sample_generator(position, i).standard_normal((channels, height + BORDER,
                                                                                    width + BORDER))
                              for i in np.asarray(index)])
            fields = autoregressive_fields(filters[classes], height, width, None, noise)
            fields = unit_l2(fields)
            fields[~present] = 0.0
            chosen[name] = fields
        fused = fuse_patterns(chosen, self.table.image_shape, self.settings.fusion, self.protected, self.owner)
        return scale_to_budget(fused, self.settings.pattern_norm, self.config.eps, self.target_l2)

    def sample_generator(self, position: int, index: int) -> np.random.Generator:
        """The driving noise of one image's sample: seed, method, task position and the image's global index."""
        return np.random.default_rng([int(self.config.seed), 0xA2, position, int(index)])

    def method_fields(self) -> dict:
        return {"ar_window": WINDOW, "ar_coefficient_l1": COEFFICIENT_L1, "ar_cropped_border": BORDER,
                "ar_fresh_per_image": self.settings.fresh,
                "pattern_rule": "causal 3x3 AR process driven by N(0,1) noise, per channel, unit L2"
                                + ("; a fresh sample per image (noise seeded by the global index)"
                                   if self.settings.fresh else "; one fixed sample per class")}
