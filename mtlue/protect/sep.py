"""SEP per-sample baseline: self-ensemble protection (Chen et al., ICLR 2023).

δ = PGD-L∞ on the sum of the base losses over the checkpoints of one clean surrogate run (15 by
default): multiclass CE toward (y + ⌊C/2⌋) mod C, binary BCE toward 1 − y, regression L1 ascended;
(checkpoint, task) pairs combined by `--objective total|dgba`. Published: 30 steps of 1/255.
"""

from __future__ import annotations

import numpy as np

from mtlue.attacks import PGD
from mtlue.data.base import batch_tensors
from mtlue.protect.base import ProtectionMethod
from mtlue.protect.objectives import base_targets
from mtlue.protect.samplewise import (CheckpointEnsemble, delta_array, only_protected,
                                      step_size_or_default, steps_or_default)

PUBLISHED_STEPS = 30
PUBLISHED_STEP_SIZE = 1 / 255


class SEPMethod(ProtectionMethod):
    """Error-maximising (class-shift) perturbations against an ensemble of surrogate checkpoints."""

    name = "sep"

    def prepare(self, context) -> None:
        super().prepare(context)
        self.steps = steps_or_default(self.settings, PUBLISHED_STEPS)
        self.alpha = step_size_or_default(self.settings, PUBLISHED_STEP_SIZE)
        self.ensemble = CheckpointEnsemble(context.surrogate_ensemble(), context.tasks)

    def perturb(self, batch, device) -> np.ndarray:
        context = self.context
        images, labels, masks = batch_tensors(batch, device)
        targets, targeted = base_targets("sep", context.tasks, labels)
        ensemble = self.ensemble
        attack = PGD(ensemble, eps=self.config.eps, alpha=self.alpha, steps=self.steps, random_start=False,
                     objective=self.settings.objective, targeted=ensemble.replicate(targeted))
        masks = only_protected(masks, context.protected_tasks)
        adversarial = attack(images, ensemble.replicate(targets), ensemble.replicate(masks))
        return delta_array(adversarial, images, self.config.eps)

    def record(self) -> dict:
        return {"steps": self.steps, "step_size": self.alpha * 255, "objective": self.settings.objective,
                "ensemble_size": len(self.ensemble.members), "attack": "pgd-linf, no random start"}
