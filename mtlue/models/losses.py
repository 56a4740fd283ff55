"""Per-task losses as the victim heads define them, with missing-label masks.

binary: one logit, BCE-with-logits; multiclass: C logits, cross-entropy;
regression: one output, L1. Masked (missing) labels contribute nothing.

Dense tasks (LibMTL / MTAN NYUv2 losses, over the valid pixels only, `mtlue.data.dense.valid_pixels`):
segmentation: cross-entropy of (B,C,H,W) logits, void (−1) ignored; depth: L1 where the depth is > 0;
normals: 1 − cos(pred̂, gt) where gt ≠ (0,0,0), pred̂ = pred / max(‖pred‖, eps) (LibMTL divides by ‖pred‖
and gives NaN for a zero prediction). A batch's dense loss is the mean over all its valid pixels
(LibMTL); a sample's is the mean over its own (0 when it has none).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mtlue.data.base import TaskSpec
from mtlue.data.dense import valid_pixels

NORMAL_EPS = 1e-8


def dense_loss_terms(task: TaskSpec, output: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per sample: the sum of the pixel losses over its valid pixels and how many there are, both (B,)."""
    valid = valid_pixels(task, target)
    if task.kind == "segmentation":
        labels = torch.where(valid, target.long(), torch.full_like(target, -1, dtype=torch.long))
        pixel = F.cross_entropy(output, labels, reduction="none", ignore_index=-1)
    elif task.kind == "depth":
        pixel = (output[:, 0] - target[:, 0].to(output.dtype)).abs()
    else:
        unit = F.normalize(output, dim=1, eps=NORMAL_EPS)
        pixel = 1.0 - (unit * target.to(output.dtype)).sum(1)
    pixel = torch.where(valid, pixel, torch.zeros_like(pixel))  # a non-finite prediction at an invalid pixel stays out
    return pixel.flatten(1).sum(1), valid.flatten(1).sum(1).to(pixel.dtype)


def per_sample_loss(task: TaskSpec, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Loss of each sample (shape (B,)) for one task; `output` is that task's head output."""
    if task.kind == "binary":
        return F.binary_cross_entropy_with_logits(output.reshape(-1), target.reshape(-1).to(output.dtype), reduction="none")
    if task.kind == "multiclass":
        return F.cross_entropy(output, target.long(), reduction="none")
    if task.kind == "regression":
        return (output.reshape(len(output), -1) - target.reshape(len(target), -1).to(output.dtype)).abs().mean(1)
    if task.is_dense:
        total, count = dense_loss_terms(task, output, target)
        return total / count.clamp_min(1.0)
    raise ValueError(f"task {task.name!r}: no loss for kind {task.kind!r}")


def task_loss(task: TaskSpec, output: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Batch-mean loss of one task over the samples whose label is present (0 if none is); dense tasks:
    the mean over every valid pixel of those samples."""
    if task.is_dense:
        total, count = dense_loss_terms(task, output, target)
        if mask is not None:
            keep = mask.bool()
            total, count = torch.where(keep, total, 0.0), torch.where(keep, count, 0.0)
        return total.sum() / count.sum().clamp_min(1.0)
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
    """Hard predictions: class ids for classification tasks (per pixel for segmentation: (B,H,W)), values
    for regression; depth and normal outputs as they are."""
    if task.kind == "binary":
        return (output.reshape(-1) > 0).long()
    if task.kind in ("multiclass", "segmentation"):
        return output.argmax(1)
    return output.reshape(len(output), -1).squeeze(1) if output.dim() == 2 else output
