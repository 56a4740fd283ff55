"""Per-task test metrics, majority-class floors, task means and Δm.

Classification tasks: accuracy, balanced accuracy, and (binary) AUC from sklearn's
`roc_auc_score` (nan when the test labels hold one class). Regression: MAE.
Missing labels (mask False) are left out of every metric.

Chance (`chance_values`): what a predictor that ignores the image scores. For accuracy it is the
majority floor: always predicting the most frequent class *of the train labels*, measured on the
test labels (a victim that ignores the images reaches it from the training labels alone). Balanced
accuracy: 1/C (0.5 for binary); AUC: 0.5; MAE: predicting the train mean.

Which metric judges a task follows its kind (`primary_metric`): binary tasks balanced accuracy (or
AUC), never plain accuracy, so an imbalanced attribute cannot look learned by predicting its
majority class; multiclass accuracy; regression MAE.
"""

from __future__ import annotations

import math

import numpy as np

from mtlue.data.base import TaskSpec
from mtlue.errors import ConfigError

HIGHER_IS_BETTER = {"accuracy": True, "balanced_accuracy": True, "auc": True, "mae": False}
BINARY_METRICS = ("balanced_accuracy", "auc")


def check_binary_metric(name: str) -> str:
    if name not in BINARY_METRICS:
        raise ConfigError(f"--binary-metric {name!r}: one of {', '.join(BINARY_METRICS)} (plain accuracy is "
                          f"not a measure of learning on an imbalanced binary task)")
    return name


def primary_metric(task: TaskSpec, binary_metric: str = "balanced_accuracy") -> str:
    """The metric that judges a task: `binary_metric` for binary, accuracy for multiclass, MAE for regression."""
    if task.kind == "binary":
        return check_binary_metric(binary_metric)
    return "accuracy" if task.is_classification else "mae"


def balanced_accuracy(labels: np.ndarray, preds: np.ndarray) -> float:
    recalls = [float(np.mean(preds[labels == c] == c)) for c in np.unique(labels)]
    return float(np.mean(recalls)) if recalls else math.nan


def task_metrics(task: TaskSpec, labels: np.ndarray, preds: np.ndarray, scores: np.ndarray | None = None, mask: np.ndarray | None = None) -> dict:
    """Metrics of one task on the labelled samples; `scores` are binary logits (for AUC)."""
    if mask is not None:
        labels, preds = labels[mask], preds[mask]
        scores = scores[mask] if scores is not None else None
    if len(labels) == 0:
        return {name: math.nan for name in (("accuracy", "balanced_accuracy", "auc") if task.is_classification else ("mae",))}
    if not task.is_classification:
        return {"mae": float(np.mean(np.abs(preds.astype(np.float64) - labels.astype(np.float64))))}
    out = {"accuracy": float(np.mean(preds == labels)), "balanced_accuracy": balanced_accuracy(labels, preds)}
    if task.kind == "binary":
        out["auc"] = math.nan
        if scores is not None and len(np.unique(labels)) == 2:
            from sklearn.metrics import roc_auc_score

            out["auc"] = float(roc_auc_score(labels, scores))
    return out


def majority_floor(task: TaskSpec, train_labels: np.ndarray, test_labels: np.ndarray, metric: str = "accuracy", train_mask=None, test_mask=None) -> float:
    """Value of `metric` for a predictor that ignores the image (see module docstring)."""
    if train_mask is not None:
        train_labels = train_labels[train_mask]
    if test_mask is not None:
        test_labels = test_labels[test_mask]
    if len(test_labels) == 0 or len(train_labels) == 0:
        return math.nan
    if metric == "mae":
        return float(np.mean(np.abs(test_labels.astype(np.float64) - np.mean(train_labels.astype(np.float64)))))
    if metric == "balanced_accuracy":
        return 1.0 / task.num_classes
    if metric == "auc":
        return 0.5
    values, counts = np.unique(train_labels, return_counts=True)
    return float(np.mean(test_labels == values[np.argmax(counts)]))


def task_metric_names(task: TaskSpec) -> tuple:
    """Every metric `task_metrics` computes for a task of this kind."""
    if not task.is_classification:
        return ("mae",)
    return ("accuracy", "balanced_accuracy", "auc") if task.kind == "binary" else ("accuracy", "balanced_accuracy")


def chance_values(task: TaskSpec, train_labels, test_labels, train_mask=None, test_mask=None) -> dict:
    """{metric: chance value} for every metric of the task (module docstring: what chance means)."""
    return {name: majority_floor(task, np.asarray(train_labels), np.asarray(test_labels), name, train_mask, test_mask)
            for name in task_metric_names(task)}


def nanmean(values) -> float:
    values = [v for v in values if v is not None and not math.isnan(v)]
    return float(np.mean(values)) if values else math.nan


def best_value(values, metric: str) -> float:
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return math.nan
    return max(values) if HIGHER_IS_BETTER[metric] else min(values)


def delta_m(metrics: dict, reference: dict, metric_names: dict) -> float:
    """Δm (LibMTL style): mean over tasks of ±(M_k − M_ref,k)/M_ref,k, + when higher is better; in %."""
    terms = []
    for task, value in metrics.items():
        ref = reference[task]
        sign = 1.0 if HIGHER_IS_BETTER[metric_names[task]] else -1.0
        if ref and not math.isnan(ref) and not math.isnan(value):
            terms.append(sign * (value - ref) / ref)
    return 100.0 * float(np.mean(terms)) if terms else math.nan
