"""Dynamic weight average (Liu et al., CVPR 2019): w = K · softmax(r / τ), r_k = L̄_k(t−1) / L̄_k(t−2).

L̄ are epoch-mean training losses; the first two epochs use w = 1.
"""

from __future__ import annotations

import torch

from mtlue.weighting.base import LossWeighting


class DynamicWeightAverage(LossWeighting):
    name = "dwa"

    def __init__(self, num_tasks: int, temperature: float = 2.0, **kwargs):
        super().__init__(num_tasks, **kwargs)
        self.temperature = temperature
        self.epoch_losses: list = []
        self.current = torch.ones(num_tasks)

    def end_epoch(self, mean_losses):
        self.epoch_losses.append(mean_losses.detach().double().cpu())
        if len(self.epoch_losses) >= 2:
            ratio = self.epoch_losses[-1] / self.epoch_losses[-2].clamp_min(1e-12)
            self.current = (self.num_tasks * torch.softmax(ratio / self.temperature, dim=0)).float()

    def total_loss(self, losses):
        weights = self.current.to(device=losses.device, dtype=losses.dtype)
        return (weights * losses).sum(), weights
