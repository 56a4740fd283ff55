"""Base unlearnable-example losses (EM, TAP, SEP) over K tasks, combined by `total` or `dgba`.

Every function returns a loss to MINIMISE with respect to δ (or the generator):
  EM  (Huang et al. 2021):  ℓ_t(F(x+δ), y_t)
  TAP (Fowl et al. 2021):   binary −BCE(F(x+δ), y_t); multiclass CE toward (y_t + ⌊C/2⌋) mod C
  SEP (Chen et al. 2023):   binary BCE toward 1 − y_t; multiclass CE toward (y_t + ⌊C/2⌋) mod C
                            (summed over checkpoints by the caller)
Regression tasks: EM minimises L1, TAP/SEP maximise it. Dense tasks (our own targets; the paper gives
none): segmentation TAP/SEP descend CE toward the class-shifted map (y + ⌊C/2⌋) mod C with void kept
void; depth and normals TAP/SEP ascend their masked loss, as regression. Task combination per sample:
  total: Σ_t m_t ℓ_t          dgba: Σ_t m_t ℓ_t / |ℓ_t|.detach()   (gradient Σ_t ∇ℓ_t/ℓ_t, Zhang et al.)
"""

from __future__ import annotations

import torch

from mtlue.data.base import TaskSpec
from mtlue.errors import ConfigError
from mtlue.models.losses import per_sample_loss

BASE_LOSSES = ("em", "tap", "sep")


def shifted_class(task: TaskSpec, labels: torch.Tensor) -> torch.Tensor:
    """Target class (y + ⌊C/2⌋) mod C (for binary: the flipped bit 1 − y)."""
    if task.kind == "binary":
        return 1 - labels.long()
    return (labels.long() + task.num_classes // 2) % task.num_classes


def base_target(base: str, task: TaskSpec, labels: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """(target, descend): the base's target for one task and whether its loss is descended toward it.

    EM: the true label, descended. TAP/SEP multiclass (and segmentation): (y + ⌊C/2⌋) mod C, descended.
    SEP binary: 1 − y, descended. TAP binary and TAP/SEP regression: the true value, ascended."""
    if base not in BASE_LOSSES:
        raise ConfigError(f"--base {base!r}: one of {', '.join(BASE_LOSSES)}")
    if base == "em":
        return labels, True
    if task.kind == "segmentation":
        return torch.where(labels < 0, labels, shifted_class(task, labels)), True
    if task.is_classification and (task.kind != "binary" or base == "sep"):
        return shifted_class(task, labels), True
    return labels, False


def base_targets(base: str, tasks, labels: dict) -> tuple[dict, dict]:
    """`base_target` for every task: ({task: target}, {task: descend})."""
    pairs = {t.name: base_target(base, t, labels[t.name]) for t in tasks}
    return {name: p[0] for name, p in pairs.items()}, {name: p[1] for name, p in pairs.items()}


def per_task_base_loss(base: str, task: TaskSpec, output: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-sample (B,) loss of one task under one base UE objective, signed to be minimised."""
    target, descend = base_target(base, task, labels)
    loss = per_sample_loss(task, output, target)
    return loss if descend else -loss


def per_sample_base_loss(base: str, tasks, outputs: dict, labels: dict, masks: dict | None = None,
                         objective: str = "total", task_names=None) -> torch.Tensor:
    """Per-sample (B,) base loss summed over tasks (`total`) or with per-sample 1/ℓ_t weights (`dgba`).

    `task_names` restricts the sum to some tasks (partial protection); missing labels add 0.
    """
    if objective not in ("total", "dgba"):
        raise ConfigError(f"--objective {objective!r}: one of total, dgba")
    masks = masks or {}
    total = None
    for task in tasks:
        if task_names is not None and task.name not in task_names:
            continue
        loss = per_task_base_loss(base, task, outputs[task.name], labels[task.name])
        if objective == "dgba":
            loss = loss / loss.detach().abs().clamp_min(1e-8)
        mask = masks.get(task.name)
        if mask is not None:
            loss = loss * mask.to(loss.dtype)
        total = loss if total is None else total + loss
    if total is None:
        raise ConfigError("no task left to protect (check --protect-tasks)")
    return total


def base_loss(base: str, tasks, outputs: dict, labels: dict, masks: dict | None = None,
              objective: str = "total", task_names=None) -> torch.Tensor:
    """Batch mean of `per_sample_base_loss` (a scalar to minimise)."""
    return per_sample_base_loss(base, tasks, outputs, labels, masks, objective, task_names).mean()
