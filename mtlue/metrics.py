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

Dense tasks (`DenseMetrics`, aggregated over every valid pixel of the split as LibMTL does, never as a
mean of batch means): segmentation mIoU and pixel accuracy from one confusion matrix (mIoU averages the
classes that occur in the labels or the predictions: LibMTL's plain mean gives NaN for a class absent
from both); depth abs and rel error, the per-pixel mean; normals the mean and median angle (degrees)
and the fractions of pixels strictly under 11.25°, 22.5° and 30°. They are judged on mIoU, abs error
and mean angle. Chance (`DenseChance`) is the image-blind predictor fitted on the train labels at
each pixel position: the per-pixel majority class, the train-mean depth and the mean train normal of
that pixel, scored like a victim.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from mtlue.data.base import TaskSpec
from mtlue.data.dense import valid_pixels
from mtlue.errors import ConfigError

HIGHER_IS_BETTER = {"accuracy": True, "balanced_accuracy": True, "auc": True, "mae": False,
                    "miou": True, "pixel_accuracy": True, "abs_err": False, "rel_err": False,
                    "mean_angle": False, "median_angle": False, "within_11.25": True, "within_22.5": True,
                    "within_30": True}
DENSE_METRICS = {"segmentation": ("miou", "pixel_accuracy"), "depth": ("abs_err", "rel_err"),
                 "normal": ("mean_angle", "median_angle", "within_11.25", "within_22.5", "within_30")}
ANGLE_THRESHOLDS = (11.25, 22.5, 30.0)
ANGLE_BINS = 18000  # median angle from a 0.01° histogram: exact to 0.01° without keeping every pixel
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
    if task.is_dense:
        return DENSE_METRICS[task.kind][0]
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
    """Every metric `task_metrics` (or `DenseMetrics`) computes for a task of this kind."""
    if task.is_dense:
        return DENSE_METRICS[task.kind]
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


def delta_m(metrics: dict, reference: dict) -> float:
    """Δm (LibMTL's count_improvement, Δp_task) of {task: {metric: value}} against `reference` (the same
    shape): mean over tasks of the task's mean over its metrics of ±(M − M_ref)/M_ref, + when higher is
    better; in %."""
    terms = []
    for task, values in metrics.items():
        refs = reference[task]
        task_terms = []
        for metric, value in values.items():
            ref = refs.get(metric)
            sign = 1.0 if HIGHER_IS_BETTER[metric] else -1.0
            if ref and value is not None and not math.isnan(ref) and not math.isnan(value):
                task_terms.append(sign * (value - ref) / ref)
        if task_terms:
            terms.append(float(np.mean(task_terms)))
    return 100.0 * float(np.mean(terms)) if terms else math.nan


class DenseMetrics:
    """Streaming test metrics of one dense task over a split (module docstring); any device.

    `add(output, target, present)` takes a batch of model outputs and labels in the tensor layout
    (`mtlue.data.base.label_tensor`) and the per-sample label-present mask (B,); `values()` gives
    {metric: float} (nan when no pixel was valid)."""

    def __init__(self, task: TaskSpec):
        if not task.is_dense:
            raise ValueError(f"task {task.name!r}: kind {task.kind!r} is not dense")
        self.task = task
        self.totals = None  # float64 sums, allocated on the first batch's device

    def add(self, output: torch.Tensor, target: torch.Tensor, present: torch.Tensor | None = None) -> None:
        task, output = self.task, output.detach()
        valid = valid_pixels(task, target, present)
        if task.kind == "segmentation":
            classes = task.num_classes
            cells = target[valid].long() * classes + output.argmax(1)[valid]
            batch = torch.bincount(cells, minlength=classes * classes).double()
        elif task.kind == "depth":
            gt = target[:, 0][valid].double()
            error = (output[:, 0][valid].double() - gt).abs()
            batch = torch.stack([error.sum(), (error / gt).sum(), gt.new_tensor(float(len(gt)))])
        else:
            # both normalised in float64: the angle between directions (a float32 unit label is 1 ± 1e-7 long,
            # which alone reads as 0.02° against itself)
            unit = torch.nn.functional.normalize(output.double(), dim=1, eps=1e-12)
            cosine = (unit * torch.nn.functional.normalize(target.double(), dim=1, eps=1e-12)).sum(1)[valid].clamp(-1.0, 1.0)
            angle = torch.rad2deg(torch.acos(cosine))
            under = [(angle < limit).sum().double() for limit in ANGLE_THRESHOLDS]
            counts = torch.stack([angle.sum(), angle.new_tensor(float(len(angle))), *under])
            batch = torch.cat([counts, torch.histc(angle, bins=ANGLE_BINS, min=0.0, max=180.0)])
        self.totals = batch if self.totals is None else self.totals + batch

    def values(self) -> dict:
        names = DENSE_METRICS[self.task.kind]
        if self.totals is None:
            return {name: math.nan for name in names}
        totals = self.totals.cpu().numpy()
        if self.task.kind == "segmentation":
            matrix = totals.reshape(self.task.num_classes, self.task.num_classes)  # rows: label, columns: prediction
            hits, union = np.diag(matrix), matrix.sum(0) + matrix.sum(1) - np.diag(matrix)
            total = matrix.sum()
            seen = union > 0
            return {"miou": float(np.mean(hits[seen] / union[seen])) if seen.any() else math.nan,
                    "pixel_accuracy": float(hits.sum() / total) if total else math.nan}
        if self.task.kind == "depth":
            error, relative, count = totals
            return {"abs_err": float(error / count) if count else math.nan,
                    "rel_err": float(relative / count) if count else math.nan}
        angle_sum, count, *rest = totals
        if not count:
            return {name: math.nan for name in names}
        under, histogram = rest[:len(ANGLE_THRESHOLDS)], np.asarray(rest[len(ANGLE_THRESHOLDS):])
        return {"mean_angle": float(angle_sum / count), "median_angle": histogram_median(histogram, count, 180.0),
                **{f"within_{limit:g}": float(n / count) for limit, n in zip(ANGLE_THRESHOLDS, under)}}


def histogram_median(histogram: np.ndarray, count: float, high: float) -> float:
    """The median of values binned in `histogram` over [0, high), interpolated within its bin."""
    width = high / len(histogram)
    cumulative = np.cumsum(histogram)
    k = int(np.searchsorted(cumulative, count / 2.0))
    before = cumulative[k - 1] if k else 0.0
    return float((k + (count / 2.0 - before) / max(histogram[k], 1.0)) * width)


class DenseChance:
    """The image-blind predictor of a dense task, fitted on the train labels at each pixel position: the
    majority class, the mean depth or the mean normal of that pixel over the train split (what a model
    learns from the labels alone, a spatial prior included; a position no train label covers falls
    back to the whole split's). `output(target)` is its prediction for a batch, shaped as a model output."""

    def __init__(self, task: TaskSpec):
        self.task = task
        self.sums = None  # (classes, H, W) counts, or (channels + 1, H, W): value sums and the valid count

    def add(self, target: torch.Tensor, present: torch.Tensor | None = None) -> None:
        valid = valid_pixels(self.task, target, present)
        if self.task.kind == "segmentation":
            batch = torch.stack([((target == c) & valid).sum(0) for c in range(self.task.num_classes)]).double()
        else:
            values = torch.where(valid.unsqueeze(1), target, torch.zeros_like(target)).double().sum(0)
            batch = torch.cat([values, valid.sum(0, keepdim=True).double()])
        self.sums = batch.cpu() if self.sums is None else self.sums + batch.cpu()

    def _fitted(self) -> torch.Tensor:
        if self.sums is None:
            raise ValueError(f"task {self.task.name!r}: no train labels seen")
        return self.sums

    def split_value(self) -> torch.Tensor:
        """The whole train split's value (C,): one-hot majority class logits, the mean depth or normal."""
        sums = self._fitted().sum((1, 2))
        if self.task.kind == "segmentation":
            return torch.nn.functional.one_hot(sums.argmax(), self.task.num_classes).double()
        return sums[:-1] / sums[-1].clamp_min(1.0)

    def prediction(self) -> torch.Tensor:
        """The per-pixel prediction (C, H, W) (class docstring)."""
        sums, fallback = self._fitted(), self.split_value()[:, None, None]
        if self.task.kind == "segmentation":
            majority = torch.nn.functional.one_hot(sums.argmax(0), self.task.num_classes).permute(2, 0, 1).double()
            return torch.where(sums.sum(0) > 0, majority, fallback).float()
        count = sums[-1:]
        return torch.where(count > 0, sums[:-1] / count.clamp_min(1.0), fallback).float()

    def output(self, target: torch.Tensor) -> torch.Tensor:
        value = self.prediction().to(target.device)
        if value.shape[-2:] != target.shape[-2:]:
            raise ValueError(f"task {self.task.name!r}: fitted on {tuple(value.shape[-2:])} maps, "
                             f"got {tuple(target.shape[-2:])}")
        return value.unsqueeze(0).expand(len(target), -1, -1, -1)
