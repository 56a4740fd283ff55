"""CAGrad (Liu et al., NeurIPS 2021): d = argmax_d min_k ⟨g_k, d⟩ s.t. ‖d − ḡ‖ ≤ c‖ḡ‖, ḡ = mean g_k.

Dual, as LibMTL: w = argmin_{w ∈ Δ} wᵀGᵀḡ + c‖ḡ‖·‖Gᵀw‖; d = ḡ + (c‖ḡ‖/‖Gᵀw‖) Gᵀw,
then rescaled by 1/(1 + c²). Defaults c = 0.5.
"""

from __future__ import annotations

import numpy as np
import torch

from mtlue.weighting.base import GradientWeighting


class CAGrad(GradientWeighting):
    name = "cagrad"

    def __init__(self, num_tasks: int, c: float = 0.5, rescale: bool = True, **kwargs):
        super().__init__(num_tasks, **kwargs)
        self.c = c
        self.rescale = rescale

    def weights_from_gram(self, gram, losses):
        from scipy.optimize import minimize

        gram_np = gram.numpy()
        k = len(gram_np)
        mean_w = np.full(k, 1.0 / k)
        radius = self.c * np.sqrt(mean_w @ gram_np @ mean_w + 1e-8)

        def objective(w):
            return w @ gram_np @ mean_w + radius * np.sqrt(w @ gram_np @ w + 1e-8)

        result = minimize(objective, mean_w, bounds=[(0, 1)] * k, constraints=({"type": "eq", "fun": lambda w: 1 - w.sum()},))
        w = result.x
        scale = radius / (np.sqrt(w @ gram_np @ w) + 1e-8)
        alpha = mean_w + scale * w
        if self.rescale:
            alpha = alpha / (1 + self.c**2)
        return torch.as_tensor(alpha, dtype=gram.dtype)
