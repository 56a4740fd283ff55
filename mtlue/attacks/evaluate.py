"""Clean vs adversarial per-task metrics of a model under an attack, and DGBA's relative change.

Per task: accuracy (classification, higher is better), MAE (regression, lower is better), or a dense
task's primary metric aggregated over all valid test pixels as LibMTL does (`mtlue.metrics.DenseMetrics`:
segmentation mIoU, depth abs error, normals mean angle; every dense metric is in the report's
`metrics`); relative change rel_t = (adv − clean)/clean if higher is better, (clean − adv)/clean if lower
is better (negative = degradation), and its mean over tasks (Zhang et al., arXiv 2305.12066, "avg. acc.").
"""

from __future__ import annotations

import numpy as np
import torch

from mtlue.attacks.objectives import clean_labels
from mtlue.data.base import batch_tensors
from mtlue.metrics import HIGHER_IS_BETTER, DenseMetrics, primary_metric
from mtlue.models.losses import predictions


def metric_name(task) -> str:
    if task.is_dense:
        return primary_metric(task)
    return "accuracy" if task.is_classification else "mae"


def higher_is_better(task) -> bool:
    return HIGHER_IS_BETTER[metric_name(task)]


class MetricSums:
    """Running per-task sums of correct predictions / absolute errors over present labels (dense tasks:
    a `DenseMetrics` each; `count` is then the number of labelled samples)."""

    def __init__(self, tasks):
        self.tasks = tasks
        self.total = {t.name: 0.0 for t in tasks}
        self.count = {t.name: 0 for t in tasks}
        self.dense = {t.name: DenseMetrics(t) for t in tasks if t.is_dense}

    @torch.no_grad()
    def add(self, outputs: dict, labels: dict, masks: dict) -> None:
        for t in self.tasks:
            mask = masks[t.name]
            if t.is_dense:
                self.dense[t.name].add(outputs[t.name], labels[t.name], mask)
                self.count[t.name] += int(mask.sum())
                continue
            predicted = predictions(t, outputs[t.name])[mask]
            target = labels[t.name][mask]
            if t.is_classification:
                self.total[t.name] += float((predicted == target.reshape(predicted.shape).long()).sum())
            else:
                self.total[t.name] += float((predicted.float() - target.reshape(predicted.shape).float()).abs().sum())
            self.count[t.name] += int(mask.sum())

    def values(self) -> dict:
        """{task: its `metric_name` value}."""
        return {t.name: self.dense[t.name].values()[metric_name(t)] if t.is_dense else
                (self.total[t.name] / self.count[t.name] if self.count[t.name] else float("nan")) for t in self.tasks}

    def all_values(self, name: str) -> dict:
        """Every metric of one dense task ({} for other tasks, whose report has one metric)."""
        return self.dense[name].values() if name in self.dense else {}


def relative_change(task, clean: float, adversarial: float) -> float:
    """(adv − clean)/clean for higher-is-better metrics, (clean − adv)/clean for lower-is-better."""
    return signed_relative_change(clean, adversarial, higher_is_better(task))


def signed_relative_change(clean: float, adversarial: float, higher: bool) -> float:
    """(adv − clean)/clean when higher is better, else (clean − adv)/clean; nan when undefined."""
    if not np.isfinite(clean) or not np.isfinite(adversarial) or clean == 0:
        return float("nan")
    return (adversarial - clean) / clean if higher else (clean - adversarial) / clean


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
        if t.is_dense:
            attacked = adversarial_sums.all_values(t.name)
            per_task[t.name]["metrics"] = {
                metric: {"clean": value, "adversarial": attacked[metric], "higher_is_better": HIGHER_IS_BETTER[metric],
                         "relative_change": signed_relative_change(value, attacked[metric], HIGHER_IS_BETTER[metric])}
                for metric, value in clean_sums.all_values(t.name).items()}
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
        f"{'task':<20} {'metric':<10} {'clean':>9} {'adv':>9} {'rel.change':>11}",
    ]
    for name, row in report["tasks"].items():
        lines.append(f"{name:<20} {row['metric']:<10} {row['clean']:>9.4f} {row['adversarial']:>9.4f} "
                     f"{row['relative_change']:>+11.4f}")
    lines.append(f"{'average relative change':<42} {report['average_relative_change']:>+19.4f}")
    return "\n".join(lines)
