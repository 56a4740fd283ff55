"""Uncertainty weighting (Kendall et al., CVPR 2018): L = Σ_k L_k / (2 e^{s_k}) + s_k / 2."""

from __future__ import annotations

import torch
from torch import nn

from mtlue.weighting.base import LossWeighting


class UncertaintyWeighting(LossWeighting):
    """Learnable log-variances s_k (initialised to −0.5, as the MTL-UE code), trained by the optimiser."""

    name = "uw"

    def __init__(self, num_tasks: int, init: float = -0.5, **kwargs):
        super().__init__(num_tasks, **kwargs)
        self.log_vars = nn.Parameter(torch.full((num_tasks,), float(init)))

    def total_loss(self, losses):
        s = self.log_vars.to(losses.device)
        weights = 1.0 / (2.0 * torch.exp(s))
        return (weights * losses + s / 2.0).sum(), weights
