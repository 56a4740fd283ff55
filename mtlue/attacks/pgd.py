"""L∞ projected gradient descent (Madry et al. 2018) with a multi-task objective.

x_{k+1} = Π_{B∞(x₀, ε) ∩ [0,1]}( x_k + α · sign(d(x_k)) ), d = the objective's direction; returns the last
iterate (torchattacks convention). Default ε = 8/255, α = 2/255, 25 steps (Ghamizi et al., AAAI 2022).
"""

from __future__ import annotations

from mtlue.attacks.base import Attack
from mtlue.errors import ConfigError


class PGD(Attack):
    """PGD-L∞: `PGD(model, eps=8/255, alpha=2/255, steps=25, random_start=True, objective="total")`."""

    name = "pgd"
    supports_start = True

    def __init__(self, model, eps=8 / 255, alpha=2 / 255, steps=25, random_start=True, objective="total",
                 targeted=False, weights=None, generator=None, per_task="auto"):
        super().__init__(model, eps, objective, targeted, weights, generator, per_task)
        if steps < 1:
            raise ConfigError(f"pgd steps: must be >= 1, got {steps}")
        self.alpha = float(alpha)
        self.steps = int(steps)
        self.random_start = bool(random_start)

    def perturb(self, images, labels, masks, start=None):
        x = self.random_start_from(images) if start is None else start
        for _ in range(self.steps):
            direction, _ = self.direction(x, labels, masks)
            x = self.project(x.detach() + self.alpha * direction.sign(), images)
        return x

    def random_start_from(self, images):
        return self.uniform_start(images) if self.random_start and self.eps > 0 else images.clone()
