"""PGD adversarial training (Madry et al., ICLR 2018) as a training hook.

Each batch is replaced by PGD-L∞ examples of the current model: ε = 8/255, step 2/255, 10 steps,
random start, objective `total` (Σ_t ℓ_t), as APBench's `madrys.py`. The attack is
`mtlue.attacks.PGD` (model in eval mode during the attack, mode restored); model parameters are
frozen while the attack runs so no gradient lands in them. Labels are unchanged.
"""

from __future__ import annotations

import torch

from mtlue.defenses.base import Defense, check_images, identity_targets


class AdversarialTraining(Defense):
    """Train on x_adv = PGD(model, ε, α, steps)(x, y, masks): min_θ E max_{‖δ‖∞≤ε} Σ_t ℓ_t(x + δ)."""

    name = "at"

    def __init__(self, eps: float = 8 / 255, alpha: float = 2 / 255, steps: int = 10, objective: str = "total",
                 generator: torch.Generator | None = None):
        super().__init__()
        self.eps = float(eps)
        self.alpha = float(alpha)
        self.steps = int(steps)
        self.objective = objective
        self.generator = generator

    def forward(self, images, labels, masks, model):
        check_images(images, self.name)
        from mtlue.attacks import PGD  # lazy: attacks sit beside defenses in the import order

        attack = PGD(model, eps=self.eps, alpha=self.alpha, steps=self.steps, random_start=True,
                     objective=self.objective, generator=self.generator)
        trainable = [p for p in model.parameters() if p.requires_grad]
        for p in trainable:
            p.requires_grad_(False)
        try:
            adversarial = attack(images, labels, masks)
        finally:
            for p in trainable:
                p.requires_grad_(True)
        return adversarial, identity_targets(labels)

    def extra_repr(self) -> str:
        return f"eps={self.eps:.5f}, alpha={self.alpha:.5f}, steps={self.steps}, objective={self.objective!r}"


__all__ = ["AdversarialTraining"]
