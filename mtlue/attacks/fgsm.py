"""Fast gradient sign method (Goodfellow et al. 2015) with a multi-task objective.

`x_adv = clip_[0,1](x₀ + ε · sign(d(x₀)))`, d = the objective's direction at the clean input.
"""

from __future__ import annotations

from mtlue.attacks.base import Attack


class FGSM(Attack):
    """One signed step of size ε: `FGSM(model, eps=8/255, objective="total")`."""

    name = "fgsm"

    def __init__(self, model, eps=8 / 255, objective="total", targeted=False, weights=None, generator=None,
                 per_task="auto"):
        super().__init__(model, eps, objective, targeted, weights, generator, per_task)

    def perturb(self, images, labels, masks):
        direction, _ = self.direction(images, labels, masks)
        return self.project(images + self.eps * direction.sign(), images)
