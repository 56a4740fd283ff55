"""Clean vs adversarial per-task metrics of a model under an attack, and DGBA's relative change.

Per task: accuracy (classification, higher is better) or MAE (regression, lower is better);
relative change rel_t = (adv − clean)/clean if higher is better, (clean − adv)/clean if lower is better
(negative = degradation), and its mean over tasks (Zhang et al., arXiv 2305.12066, "avg. acc.").
"""

from __future__ import annotations

import numpy as np
import torch

from mtlue.attacks.objectives import clean_labels
from mtlue.data.base import batch_tensors
from mtlue.models.losses import predictions


def metric_name(task) -> str:
    return "accuracy" if task.is_classification else "mae"


def higher_is_better(task) -> bool:
    return task.is_classification


class MetricSums:
    """Running per-task sums of correct predictions / absolute errors over present labels."""

    def __init__(self, tasks):
        self.tasks = tasks
        self.total = {t.name: 0.0 for t in tasks}
        self.count = {t.name: 0 for t in tasks}

    @torch.no_grad()
    def add(self, outputs: dict, labels: dict, masks: dict) -> None:
        for t in self.tasks:
            mask = masks[t.name]
            predicted = predictions(t, outputs[t.name])[mask]
            target = labels[t.name][mask]
            if t.is_classification:
                self.total[t.name] += float((predicted == target.reshape(predicted.shape).long()).sum())
            else:
                self.total[t.name] += float((predicted.float() - target.reshape(predicted.shape).float()).abs().sum())
            self.count[t.name] += int(mask.sum())

    def values(self) -> dict:
        return {name: (self.total[name] / self.count[name] if self.count[name] else float("nan")) for name in self.total}


def relative_change(task, clean: float, adversarial: float) -> float:
    """(adv − clean)/clean for higher-is-better metrics, (clean − adv)/clean for lower-is-better."""
    if not np.isfinite(clean) or not np.isfinite(adversarial) or clean == 0:
        return float("nan")
    return (adversarial - clean) / clean if higher_is_better(task) else (clean - adversarial) / clean


def evaluate_attack(model, source, attack, split: str = "test", batch_size: int = 256, limit: int | None = None,
                    device=None, progress=None) -> dict:
    """Attack the first `limit` samples of `split` batch by batch; return the report dict.

    `progress(done, total)` is called after each batch when given.
    """
    device = device or next(model.parameters()).device
    tasks = model.tasks
    total = source.size(split) if limit is None else min(limit, source.size(split))
    clean_sums, adversarial_sums = MetricSums(tasks), MetricSums(tasks)
    max_linf = 0.0
    model.eval()
    done = 0
    for batch in source.batches(split, batch_size, 0, total):
        images, labels, masks = batch_tensors(batch, device)
        labels, masks = clean_labels(tasks, labels, masks, device)
        adversarial = attack(images, labels, masks)
        max_linf = max(max_linf, float((adversarial - images).abs().max()))
        with torch.no_grad():
            clean_sums.add(model(images), labels, masks)
            adversarial_sums.add(model(adversarial), labels, masks)
        done += len(images)
        if progress is not None:
            progress(done, total)
    clean, adversarial = clean_sums.values(), adversarial_sums.values()
    per_task = {}
    for t in tasks:
        per_task[t.name] = {
            "metric": metric_name(t),
            "higher_is_better": higher_is_better(t),
            "clean": clean[t.name],
            "adversarial": adversarial[t.name],
            "relative_change": relative_change(t, clean[t.name], adversarial[t.name]),
            "labelled": clean_sums.count[t.name],
        }
    changes = [v["relative_change"] for v in per_task.values() if np.isfinite(v["relative_change"])]
    return {
        "attack": attack.name,
        "objective": attack.objective.spec,
        "epsilon": attack.eps,
        "alpha": getattr(attack, "alpha", None),
        "steps": getattr(attack, "steps", 1),
        "targeted": attack.targeted,
        "split": split,
        "samples": done,
        "max_linf": max_linf,
        "tasks": per_task,
        "average_relative_change": float(np.mean(changes)) if changes else float("nan"),
    }


def format_report(report: dict) -> str:
    """The report as a plain-text table: task, metric, clean, adversarial, relative change."""
    lines = [
        f"{report['attack']} objective={report['objective']} eps={report['epsilon'] * 255:.3g}/255 "
        f"steps={report['steps']} samples={report['samples']} split={report['split']}",
        f"{'task':<20} {'metric':<9} {'clean':>9} {'adv':>9} {'rel.change':>11}",
    ]
    for name, row in report["tasks"].items():
        lines.append(f"{name:<20} {row['metric']:<9} {row['clean']:>9.4f} {row['adversarial']:>9.4f} "
                     f"{row['relative_change']:>+11.4f}")
    lines.append(f"{'average relative change':<41} {report['average_relative_change']:>+19.4f}")
    return "\n".join(lines)
