"""Equal weighting: L = Σ_k L_k (LibMTL's EW; the MTL-UE code's LS up to a 1/K factor)."""

from __future__ import annotations

import torch

from mtlue.weighting.base import LossWeighting


class EqualWeighting(LossWeighting):
    """w_k = 1 for every task."""

    name = "ew"

    def total_loss(self, losses):
        weights = torch.ones_like(losses)
        return losses.sum(), weights
