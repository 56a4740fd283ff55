"""GradNorm (Chen et al., ICML 2018): learn w = K·softmax(ξ) so that ‖w_k g_k‖ tracks
mean_j ‖w_j g_j‖ · r_k^a, r_k = (L_k/L_k(0)) / mean_j (L_j/L_j(0)); a = 1.5.

ξ gets the gradient of Σ_k |‖w_k g_k‖ − target_k| (target detached) and is stepped by the
training optimiser; ‖g_k‖ comes from diag(GGᵀ). L(0) is the first batch's losses.
"""

from __future__ import annotations

import torch
from torch import nn

from mtlue.weighting.base import GradientWeighting


class GradNorm(GradientWeighting):
    name = "gradnorm"

    def __init__(self, num_tasks: int, asymmetry: float = 1.5, **kwargs):
        super().__init__(num_tasks, **kwargs)
        self.asymmetry = asymmetry
        self.logits = nn.Parameter(torch.zeros(num_tasks))
        self.register_buffer("initial_losses", torch.zeros(num_tasks))
        self.started = False

    def weights_from_gram(self, gram, losses):
        if not self.started:
            self.initial_losses.copy_(losses.float())
            self.started = True
        with torch.enable_grad():
            logits = self.logits.detach().cpu().double().requires_grad_(True)
            weights = self.num_tasks * torch.softmax(logits, dim=0)
            weighted_norms = weights * gram.diagonal().clamp_min(0).sqrt()
            ratio = losses / self.initial_losses.cpu().double().clamp_min(1e-12)
            target = (weighted_norms.mean() * (ratio / ratio.mean()) ** self.asymmetry).detach()
            balance_loss = (weighted_norms - target).abs().sum()
            (grad,) = torch.autograd.grad(balance_loss, logits)
        self.logits.grad = grad.to(self.logits.dtype).to(self.logits.device)
        return weights.detach()
