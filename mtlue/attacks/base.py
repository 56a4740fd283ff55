"""The attack base class: torchattacks' calling convention with a multi-task objective.

`attack = PGD(model, eps=8/255, ...)`; `adv = attack(images, labels, masks=None)` with images in [0, 1]
(B, C, H, W), labels/masks dicts keyed by task name; normalisation lives inside the model. The model is
put in eval mode for the attack and its previous mode restored afterwards.
"""

from __future__ import annotations

import torch

from mtlue.attacks.objectives import Objective, clean_labels, objective_direction, parse_objective
from mtlue.errors import ConfigError


class Attack:
    """Base of the L∞ attacks: holds model, ε, objective and target mode; subclasses implement `perturb`.

    `targeted`: True descends every task's loss toward the given labels, False ascends it, and a mapping
    {task: bool} mixes the two per task (e.g. TAP: targeted class shift, untargeted binary tasks).
    """

    name = "attack"
    supports_start = False

    def __init__(self, model, eps: float = 8 / 255, objective="total", targeted: bool = False, weights=None,
                 generator: torch.Generator | None = None, per_task: str = "auto"):
        if eps < 0:
            raise ConfigError(f"attack eps: must be >= 0, got {eps}")
        if per_task not in ("auto", "batched", "loop"):
            raise ConfigError(f"attack per_task: one of auto, batched, loop (got {per_task!r})")
        self.model = model
        self.eps = float(eps)
        self.objective: Objective = parse_objective(objective, model.tasks, weights)
        names = [t.name for t in model.tasks]
        if isinstance(targeted, dict):
            unknown = sorted(set(targeted) - set(names))
            if unknown:
                raise ConfigError(f"attack targeted: no task {unknown[0]!r} (tasks: {', '.join(names)})")
            targeted = {name: bool(targeted.get(name, False)) for name in names}
        else:
            targeted = bool(targeted)
        self.targeted = targeted  # bool for all tasks, or {task: bool}
        self.generator = generator
        self.per_task = per_task

    def __call__(self, images: torch.Tensor, labels: dict, masks: dict | None = None,
                 start: torch.Tensor | None = None) -> torch.Tensor:
        """Adversarial images for `images` (in [0, 1]); for targeted tasks `labels` hold the targets.

        `start` (iterative attacks only): the first iterate instead of images/random start, projected
        into the ε-ball (EM continues from the previous round's perturbation this way).
        """
        if images.dim() != 4:
            raise ConfigError(f"{self.name}: images must be (B, C, H, W), got shape {tuple(images.shape)}")
        if start is not None and not self.supports_start:
            raise ConfigError(f"{self.name}: takes no start point")
        was_training = self.model.training
        self.model.eval()
        try:
            safe_labels, bool_masks = clean_labels(self.model.tasks, labels, masks, images.device)
            extra = {} if start is None else {"start": self.project(start.detach().to(images), images)}
            with torch.enable_grad():
                adv = self.perturb(images.detach(), safe_labels, bool_masks, **extra)
        finally:
            self.model.train(was_training)
        return adv.detach()

    def perturb(self, images: torch.Tensor, labels: dict, masks: dict) -> torch.Tensor:
        raise NotImplementedError

    def direction(self, x: torch.Tensor, labels: dict, masks: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Ascent direction of the objective at x and the (K, B) per-sample task losses there."""
        return objective_direction(self.model, x, labels, masks, self.objective, self.targeted, self.per_task)

    def project(self, x: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        """Clip x into the L∞ ε-ball around `images` and into [0, 1]."""
        return torch.clamp(torch.min(torch.max(x, images - self.eps), images + self.eps), 0.0, 1.0)

    def uniform_start(self, images: torch.Tensor) -> torch.Tensor:
        """images + U(−ε, ε) noise drawn from the attack's generator, clipped to [0, 1]."""
        device = self.generator.device if self.generator is not None else images.device
        noise = torch.rand(images.shape, generator=self.generator, device=device, dtype=images.dtype)
        return torch.clamp(images + (2 * noise.to(images.device) - 1) * self.eps, 0.0, 1.0)

    def __repr__(self) -> str:
        params = {k: v for k, v in vars(self).items() if k not in ("model", "generator", "objective")}
        inner = ", ".join(f"{k}={v}" for k, v in params.items())
        return f"{type(self).__name__}(objective={self.objective.spec}, {inner})"
