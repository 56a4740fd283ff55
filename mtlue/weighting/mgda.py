"""MGDA (Sener & Koltun, NeurIPS 2018): α = argmin_{α ∈ Δ} ‖Σ_k α_k g_k‖², by Frank–Wolfe on GGᵀ.

Raw gradients (LibMTL's `mgda_gn="none"`); the weights sum to 1.
"""

from __future__ import annotations

import torch

from mtlue.weighting.base import GradientWeighting


def min_norm_weights(gram: torch.Tensor, iterations: int = 250, tol: float = 1e-10) -> torch.Tensor:
    """Frank–Wolfe with exact line search for the min-norm point of the convex hull of the g_k."""
    k = len(gram)
    alpha = torch.full((k,), 1.0 / k, dtype=gram.dtype)
    for _ in range(iterations):
        grad = gram @ alpha
        t = int(torch.argmin(grad))
        vv = alpha @ grad
        vg = grad[t]
        gg = gram[t, t]
        denom = vv - 2 * vg + gg
        if denom <= 0:
            break
        step = float(((vv - vg) / denom).clamp(0.0, 1.0))
        if step < tol:
            break
        alpha = (1 - step) * alpha
        alpha[t] += step
    return alpha


class MGDA(GradientWeighting):
    name = "mgda"

    def weights_from_gram(self, gram, losses):
        return min_norm_weights(gram)
