"""Pieces shared by the per-sample PGD baselines (em, tap, sep): targets, masks, ensembles, δ arrays.

Each baseline runs `mtlue.attacks.PGD` with `--objective total|dgba` on a surrogate, with the targets
and directions of `mtlue.protect.objectives.base_targets` (the same rule the MTL-UE generator's base
losses follow).
"""

from __future__ import annotations

import numpy as np
import torch

from mtlue.data.base import TaskSpec


def steps_or_default(settings, default: int) -> int:
    """settings.steps when set (not None), else the method's published default."""
    return int(settings.steps) if settings.steps is not None else default


def step_size_or_default(settings, default: float) -> float:
    """settings.step_size (1/255 units) as a fraction of the pixel range, else `default` (already a fraction)."""
    return settings.step_size / 255.0 if settings.step_size is not None else default


def only_protected(masks: dict, protected: tuple) -> dict:
    """Masks with every task outside `protected` switched off (its loss then contributes nothing)."""
    return {name: (mask if name in protected else torch.zeros_like(mask)) for name, mask in masks.items()}


def delta_array(adversarial: torch.Tensor, images: torch.Tensor, eps: float) -> np.ndarray:
    """δ = adversarial − images as float32 (N, H, W, C), clipped to [−ε, ε] against rounding."""
    delta = (adversarial - images).clamp(-eps, eps)
    return delta.permute(0, 2, 3, 1).float().cpu().numpy()


class CheckpointEnsemble(torch.nn.Module):
    """Models of one training run seen as one multi-task model with task `name@i` for checkpoint i.

    A `total` objective over it is Σ_i Σ_t L_t(F_i(x)), the self-ensemble sum of SEP (Chen et al. 2023);
    `dgba` weights each (checkpoint, task) pair by 1/ℓ.
    """

    def __init__(self, models, tasks):
        super().__init__()
        self.members = torch.nn.ModuleList(models)
        self.base_tasks = tuple(tasks)
        self.tasks = tuple(TaskSpec(f"{t.name}@{i}", t.kind, t.num_classes)
                           for i in range(len(models)) for t in self.base_tasks)

    def forward(self, x):
        outputs = {}
        for i, member in enumerate(self.members):
            for name, value in member(x).items():
                outputs[f"{name}@{i}"] = value
        return outputs

    def replicate(self, per_task: dict) -> dict:
        """A {task: value} dict repeated for every checkpoint under `task@i`."""
        return {f"{t.name}@{i}": per_task[t.name] for i in range(len(self.members)) for t in self.base_tasks}
