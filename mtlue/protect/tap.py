"""TAP per-sample baseline: adversarial poisons from the fixed clean surrogate (Fowl et al., NeurIPS 2021).

δ = PGD-L∞ on the frozen clean MTL surrogate, descending CE toward (y + ⌊C/2⌋) mod C for multiclass
tasks and ascending BCE (binary) / L1 (regression), tasks combined by `--objective total|dgba`.
Published: 250 steps (`attackiter`); step max(0.05·ε, 2.5·ε/steps) unless --step-size is given.
"""

from __future__ import annotations

import numpy as np

from mtlue.attacks import PGD
from mtlue.data.base import batch_tensors
from mtlue.protect.base import ProtectionMethod
from mtlue.protect.objectives import base_targets
from mtlue.protect.samplewise import delta_array, only_protected, step_size_or_default, steps_or_default

PUBLISHED_STEPS = 250


class TAPMethod(ProtectionMethod):
    """Targeted adversarial poisoning of every train sample against the clean surrogate."""

    name = "tap"

    def prepare(self, context) -> None:
        super().prepare(context)
        eps = self.config.eps
        self.steps = steps_or_default(self.settings, PUBLISHED_STEPS)
        self.alpha = step_size_or_default(self.settings, max(0.05 * eps, 2.5 * eps / self.steps))
        self.surrogate = context.clean_surrogate()

    def perturb(self, batch, device) -> np.ndarray:
        context = self.context
        images, labels, masks = batch_tensors(batch, device)
        targets, targeted = base_targets("tap", context.tasks, labels)
        attack = PGD(self.surrogate, eps=self.config.eps, alpha=self.alpha, steps=self.steps, random_start=False,
                     objective=self.settings.objective, targeted=targeted)
        adversarial = attack(images, targets, only_protected(masks, context.protected_tasks))
        return delta_array(adversarial, images, self.config.eps)

    def record(self) -> dict:
        return {"steps": self.steps, "step_size": self.alpha * 255, "objective": self.settings.objective,
                "attack": "pgd-linf, no random start"}
