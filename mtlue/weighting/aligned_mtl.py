"""Aligned-MTL (Senushkin et al., CVPR 2023), as in the MTL-UE and LibMTL code.

M = GGᵀ = V Λ Vᵀ; keep eigenvalues above tol = λ_max · K · eps (descending);
B = √λ_min · V Λ^{-1/2} Vᵀ; α = column sums of B; the shared update is Σ_k α_k g_k.
The aligned rows BG are orthogonal with equal norm √λ_min (condition number 1).
"""

from __future__ import annotations

import torch

from mtlue.weighting.base import GradientWeighting


class AlignedMTL(GradientWeighting):
    name = "aligned_mtl"

    def weights_from_gram(self, gram, losses):
        eigvals, eigvecs = torch.linalg.eigh(gram)
        tol = eigvals.max() * max(gram.shape) * torch.finfo(torch.float32).eps
        keep = eigvals > tol
        if not bool(keep.any()):
            return torch.ones(len(gram), dtype=gram.dtype)  # all gradients vanish: nothing to align
        eigvals, eigvecs = eigvals[keep], eigvecs[:, keep]
        order = torch.argsort(eigvals, descending=True)
        eigvals, eigvecs = eigvals[order], eigvecs[:, order]
        balance = eigvecs @ torch.diag(eigvals.rsqrt()) @ eigvecs.T * eigvals[-1].sqrt()
        return balance.sum(0)
