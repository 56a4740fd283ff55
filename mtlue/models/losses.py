"""Per-task losses as the victim heads define them, with missing-label masks.

binary: one logit, BCE-with-logits; multiclass: C logits, cross-entropy;
regression: one output, L1. Masked (missing) labels contribute nothing.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mtlue.data.base import TaskSpec


def per_sample_loss(task: TaskSpec, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Loss of each sample (shape (B,)) for one task; `output` is that task's head output."""
    if task.kind == "binary":
        return F.binary_cross_entropy_with_logits(output.reshape(-1), target.reshape(-1).to(output.dtype), reduction="none")
    if task.kind == "multiclass":
        return F.cross_entropy(output, target.long(), reduction="none")
    if task.kind in ("regression", "depth"):
        return (output.reshape(len(output), -1) - target.reshape(len(target), -1).to(output.dtype)).abs().mean(1)
    if task.kind == "segmentation":
        return F.cross_entropy(output, target.long(), reduction="none", ignore_index=-1).flatten(1).mean(1)
    raise ValueError(f"task {task.name!r}: no loss for kind {task.kind!r}")


def task_loss(task: TaskSpec, output: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Batch-mean loss of one task over the samples whose label is present (0 if none is)."""
    losses = per_sample_loss(task, output, target)
    if mask is None:
        return losses.mean()
    mask = mask.to(losses.dtype)
    return (losses * mask).sum() / mask.sum().clamp_min(1.0)


def task_losses(tasks, outputs: dict, labels: dict, masks: dict | None = None) -> torch.Tensor:
    """Stacked batch-mean losses, one per task in `tasks` order (shape (K,))."""
    masks = masks or {}
    return torch.stack([task_loss(t, outputs[t.name], labels[t.name], masks.get(t.name)) for t in tasks])


def predictions(task: TaskSpec, output: torch.Tensor) -> torch.Tensor:
    """Hard predictions: class ids for classification tasks, values for regression."""
    if task.kind == "binary":
        return (output.reshape(-1) > 0).long()
    if task.kind in ("multiclass", "segmentation"):
        return output.argmax(1)
    return output.reshape(len(output), -1).squeeze(1) if output.dim() == 2 else output
