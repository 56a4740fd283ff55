"""PCGrad (Yu et al., NeurIPS 2020): for each i, in random order j ≠ i, if g_i'·g_j < 0 then
g_i' ← g_i' − (g_i'·g_j / ‖g_j‖²) g_j; the update is Σ_i g_i'.

Each g_i' is kept as coefficients over the original g_k, so only GGᵀ is needed.
"""

from __future__ import annotations

import torch

from mtlue.weighting.base import GradientWeighting


class PCGrad(GradientWeighting):
    name = "pcgrad"

    def weights_from_gram(self, gram, losses):
        k = len(gram)
        coeffs = torch.eye(k, dtype=gram.dtype)
        for i in range(k):
            for j in torch.randperm(k, generator=self.generator).tolist():
                if j == i or gram[j, j] <= 0:
                    continue
                dot = coeffs[i] @ gram[:, j]
                if dot < 0:
                    coeffs[i, j] -= dot / gram[j, j]
        return coeffs.sum(0)
