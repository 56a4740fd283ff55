"""Random loss weighting (Lin et al., TMLR 2022): w = K · softmax(z), z ~ N(0, I_K) drawn every step."""

from __future__ import annotations

import torch

from mtlue.weighting.base import LossWeighting


class RandomLossWeighting(LossWeighting):
    """Draws z from the weighting's own CPU `torch.Generator`, so runs repeat for a seed."""

    name = "rlw"

    def total_loss(self, losses):
        z = torch.randn(self.num_tasks, generator=self.generator)
        weights = (self.num_tasks * torch.softmax(z, dim=0)).to(device=losses.device, dtype=losses.dtype)
        return (weights * losses).sum(), weights
