"""Auto-PGD L∞ (Croce & Hein, ICML 2020) with a multi-task objective and per-sample step sizes.

z = Π(x_k + η · sign(d(x_k))); x_{k+1} = Π(x_k + 0.75·(z − x_k) + 0.25·(x_k − x_{k−1})) (plain step at k = 0).
η starts at 2ε; at checkpoints w_j = ⌈p_j N⌉ (p₀ = 0, p₁ = 0.22, p_{j+1} = p_j + max(p_j − p_{j−1} − 0.03, 0.06))
a sample's η is halved and it restarts from its best point when (1) the objective rose in fewer than
ρ = 0.75 of the steps since the last checkpoint, or (2) η was not halved at the last checkpoint and the best
value has not improved since. Returns each sample's best iterate (objective scores: `sample_scores`).
"""

from __future__ import annotations

import math

import torch

from mtlue.attacks.base import Attack
from mtlue.attacks.objectives import sample_losses, sample_scores
from mtlue.errors import ConfigError

MOMENTUM = 0.75
INCREASE_FRACTION = 0.75  # ρ


def apgd_checkpoints(steps: int) -> list:
    """Iteration counts w_j at which APGD checks its step size (Croce & Hein 2020, §3.2)."""
    fractions = [0.0, 0.22]
    while fractions[-1] < 1.0:
        fractions.append(fractions[-1] + max(fractions[-1] - fractions[-2] - 0.03, 0.06))
    marks = sorted({math.ceil(round(p * steps, 6)) for p in fractions[1:]})  # round: 0.57·100 is 57.000…01
    return [w for w in marks if 0 < w <= steps]


class APGD(Attack):
    """APGD-L∞: `APGD(model, eps=8/255, steps=25, objective="total", random_start=False)`."""

    name = "apgd"

    def __init__(self, model, eps=8 / 255, steps=25, objective="total", targeted=False, weights=None,
                 random_start=False, generator=None, per_task="auto"):
        super().__init__(model, eps, objective, targeted, weights, generator, per_task)
        if steps < 1:
            raise ConfigError(f"apgd steps: must be >= 1, got {steps}")
        self.steps = int(steps)
        self.random_start = bool(random_start)

    def scores(self, losses, clean_losses, masks):
        return sample_scores(self.objective, losses, clean_losses, masks, self.model.tasks, self.targeted)

    def perturb(self, images, labels, masks):
        with torch.no_grad():
            clean_losses = sample_losses(self.model, images, labels, masks)
        x = self.uniform_start(images) if self.random_start and self.eps > 0 else images.clone()
        direction, losses = self.direction(x, labels, masks)
        score = self.scores(losses, clean_losses, masks)
        best_x, best_direction, best_score = x.clone(), direction.clone(), score.clone()

        per_sample = (len(images),) + (1,) * (images.dim() - 1)
        step = torch.full(per_sample, 2 * self.eps, dtype=images.dtype, device=images.device)
        checkpoints = set(apgd_checkpoints(self.steps))
        increases = torch.zeros(len(images), device=images.device)
        reduced_last = torch.ones(len(images), dtype=torch.bool, device=images.device)
        best_at_last_check = best_score.clone()
        last_check = 0
        x_prev = x
        for k in range(self.steps):
            z = self.project(x + step * direction.sign(), images)
            if k > 0:
                z = self.project(x + MOMENTUM * (z - x) + (1 - MOMENTUM) * (x - x_prev), images)
            x_prev, x = x, z.detach()
            previous_score = score
            direction, losses = self.direction(x, labels, masks)
            score = self.scores(losses, clean_losses, masks)
            increases += (score > previous_score).float()
            improved = score > best_score
            best_x[improved], best_direction[improved] = x[improved], direction[improved]
            best_score = torch.where(improved, score, best_score)
            if k + 1 in checkpoints:
                oscillating = increases < INCREASE_FRACTION * (k + 1 - last_check)
                stalled = ~reduced_last & (best_score <= best_at_last_check)
                reduce = oscillating | stalled
                step[reduce] /= 2
                # restart from the best point with no momentum carried over
                x, x_prev = x.clone(), x_prev.clone()
                x[reduce] = best_x[reduce]
                x_prev[reduce] = best_x[reduce]
                direction[reduce] = best_direction[reduce]
                score = torch.where(reduce, best_score, score)
                reduced_last, best_at_last_check = reduce, best_score.clone()
                increases.zero_()
                last_check = k + 1
        return best_x
