"""FairGrad (Ban & Ji, ICML 2024): α-fair weights w > 0 solving GGᵀ w = w^{−1/α}; update Σ_k w_k g_k.

The reference back-propagates Σ_k w_k L_k, so the task heads are weighted too (`weights_heads`).

Solved, as the reference code, with scipy.optimize.least_squares from w = 1/K, bounds w ≥ 0.
"""

from __future__ import annotations

import numpy as np
import torch

from mtlue.weighting.base import GradientWeighting


class FairGrad(GradientWeighting):
    name = "fairgrad"
    weights_heads = True

    def __init__(self, num_tasks: int, alpha: float = 1.0, **kwargs):
        super().__init__(num_tasks, **kwargs)
        self.alpha = alpha

    def weights_from_gram(self, gram, losses):
        from scipy.optimize import least_squares

        gram_np = gram.numpy()
        k = len(gram_np)

        def residual(w):
            return gram_np @ w - np.power(1.0 / np.maximum(w, 1e-12), 1.0 / self.alpha)

        result = least_squares(residual, np.full(k, 1.0 / k), bounds=(0, np.inf))
        return torch.as_tensor(result.x, dtype=gram.dtype)
