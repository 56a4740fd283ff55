"""Why a release protects or not: four cheap measurements of the perturbation a store holds.

δ is read as stored − clean (uint8 bytes, same global index), so the diagnostics need the clean source
the store was made from and nothing else of the protection run.

- **budget stored**: mean |δ| against ε, and the share of pixels where clipping at 0/255 or rounding
  left less than the full budget (|δ| < ε − ½).
- **intra-class variance** (the MTL-UE paper's Table 1 statistic): per task, the mean squared distance
  of δ from its class mean over the mean squared distance from the overall mean of δ. 0 = class-wise δ
  (one pattern per class), 1 = δ carries no class structure.
- **shortcut presence**: per task, a linear probe (ridge classifier) trained on δ alone, scored on held-out
  samples as (score − chance) / (1 − chance): 1 = δ alone tells the label perfectly, 0 = no better than chance.
- **shortcut speed**: a fresh small victim trained one epoch on the release and scored on the release
  (how fast the shortcut is fitted), against the same victim trained one epoch on clean data and scored on
  the clean test split (how fast the natural features are learned); and the release-trained victim scored
  on δ-only inputs (0.5 + δ) and on the clean test split.

Scores are (score − chance) / (1 − chance) with binary tasks on balanced accuracy and multiclass tasks on
accuracy against the majority class; regression and dense tasks are skipped (named in `skipped`).
"""

from __future__ import annotations

import numpy as np
import torch

from mtlue.data.base import Source
from mtlue.errors import SourceError
from mtlue.metrics import balanced_accuracy

PROBE_SAMPLES = 4096  # samples read for the probe and the variance statistic (the first ones of the split)
PROBE_HELD_OUT = 0.25  # share of them the probe is scored on
PROBE_SIDE = 16  # δ is average-pooled to at most this side before the probe (keeps the ridge solve small)
SPEED_BATCH = 128
SPEED_PIXELS = 8192 * 32 * 32  # the speed victims read at most this many pixels per split (8,192 images at 32 px)


def _classification_tasks(tasks) -> list:
    return [t for t in tasks if t.kind in ("binary", "multiclass")]


def _normalised_score(task, labels: np.ndarray, preds: np.ndarray, train_labels: np.ndarray) -> float:
    """(score − chance) / (1 − chance): balanced accuracy for binary tasks, accuracy for multiclass."""
    if task.kind == "binary":
        score, chance = balanced_accuracy(labels, preds), 0.5
    else:
        score = float(np.mean(preds == labels))
        majority = np.bincount(train_labels.astype(np.int64), minlength=task.num_classes).argmax()
        chance = float(np.mean(labels == majority))
    return (score - chance) / (1.0 - chance) if chance < 1.0 else 0.0


def aligned_train(protected: Source, clean: Source, limit: int) -> tuple:
    """(the first `limit` stored train samples as a Batch, the clean uint8 images with the same global indices)."""
    count = min(limit, protected.size("train"))
    stored = next(protected.batches("train", count, 0, count))
    position = {int(i): p for p, i in enumerate(clean.index_array("train"))}
    missing = [int(i) for i in stored.index if int(i) not in position]
    if missing:
        raise SourceError(f"diagnostics: train index {missing[0]} of the store is not in the clean source's train split")
    return stored, np.stack([clean.get("train", position[int(i)]).image for i in stored.index])


def read_deltas(protected: Source, clean: Source, limit: int = PROBE_SAMPLES) -> dict:
    """The first `limit` train samples of both: δ (float32, 1/255 units), clean bytes, labels and masks."""
    stored, original = aligned_train(protected, clean, limit)
    delta = stored.images.astype(np.float32) - original.astype(np.float32)
    return {"delta": delta, "clean": original, "labels": stored.labels, "masks": stored.masks}


def budget_stored(delta: np.ndarray, clean_bytes: np.ndarray, epsilon: float) -> dict:
    """Mean |δ| over ε and the share of pixels the stored bytes cut short of ε (clipping or rounding)."""
    magnitude = np.abs(delta)
    if epsilon <= 0:
        return {"mean_abs_delta": float(magnitude.mean()), "mean_abs_over_epsilon": None, "cut_share": None}
    cut = magnitude < np.floor(epsilon) - 0.5
    at_bound = (clean_bytes.astype(np.float32) < epsilon) | (clean_bytes.astype(np.float32) > 255 - epsilon)
    return {
        "mean_abs_delta": float(magnitude.mean()),
        "mean_abs_over_epsilon": float(magnitude.mean() / epsilon),
        "cut_share": float(cut.mean()),
        "cut_at_clip_share": float((cut & at_bound).mean()),
        "zero_share": float((magnitude == 0).mean()),
    }


def intra_class_variance(delta: np.ndarray, labels: dict, masks: dict, tasks) -> dict:
    """Per task: within-class over total mean squared deviation of δ (0 = class-wise, 1 = no class structure)."""
    flat = delta.reshape(len(delta), -1).astype(np.float64)
    out = {}
    for task in _classification_tasks(tasks):
        present = np.asarray(masks[task.name], dtype=bool)
        rows, y = flat[present], np.asarray(labels[task.name])[present].astype(np.int64)
        if len(rows) < 2:
            continue
        total = float(((rows - rows.mean(0)) ** 2).sum(1).mean())
        within = 0.0
        for c in np.unique(y):
            members = rows[y == c]
            within += float(((members - members.mean(0)) ** 2).sum(1).sum())
        within /= len(rows)
        out[task.name] = within / total if total > 0 else 0.0
    return out


def _pooled(delta: np.ndarray) -> np.ndarray:
    """δ average-pooled to at most PROBE_SIDE per side, flattened (N, features)."""
    tensor = torch.from_numpy(delta).permute(0, 3, 1, 2)
    side = max(tensor.shape[-2:])
    if side > PROBE_SIDE:
        tensor = torch.nn.functional.adaptive_avg_pool2d(tensor, PROBE_SIDE)
    return tensor.reshape(len(delta), -1).numpy().astype(np.float64)


def shortcut_presence(delta: np.ndarray, labels: dict, masks: dict, tasks, seed: int = 0) -> dict:
    """Per task: a ridge-classifier probe on δ alone, held-out (score − chance) / (1 − chance)."""
    from sklearn.linear_model import RidgeClassifier

    features = _pooled(delta)
    order = np.random.default_rng(seed).permutation(len(features))
    cut = int(len(order) * (1 - PROBE_HELD_OUT))
    fit_rows, test_rows = order[:cut], order[cut:]
    out = {}
    for task in _classification_tasks(tasks):
        y = np.asarray(labels[task.name]).astype(np.int64)
        present = np.asarray(masks[task.name], dtype=bool)
        fit = fit_rows[present[fit_rows]]
        held = test_rows[present[test_rows]]
        if len(held) == 0 or len(np.unique(y[fit])) < 2:
            continue
        probe = RidgeClassifier(alpha=1.0).fit(features[fit], y[fit])
        out[task.name] = _normalised_score(task, y[held], probe.predict(features[held]), y[fit])
    return out


def _tensor_batches(images: np.ndarray, labels: dict, names: list, order: np.ndarray):
    for lo in range(0, len(order), SPEED_BATCH):
        rows = order[lo:lo + SPEED_BATCH]
        x = torch.from_numpy(images[rows]).permute(0, 3, 1, 2).float() / 255.0
        yield x, {n: torch.from_numpy(np.asarray(labels[n])[rows]) for n in names}


def _one_epoch_victim(images: np.ndarray, labels: dict, masks: dict, tasks, device, seed: int):
    """small_cnn trained one epoch (Adam 1e-3, batch 128, no augmentation) on uint8 images."""
    from mtlue.models.losses import task_losses
    from mtlue.models.mtl import build_model

    torch.manual_seed(seed)
    model = build_model(tasks, "small_cnn", images.shape[-1], images.shape[1]).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    order = np.random.default_rng(seed).permutation(len(images))
    names = [t.name for t in tasks]
    model.train()
    for lo in range(0, len(order), SPEED_BATCH):
        rows = order[lo:lo + SPEED_BATCH]
        x = torch.from_numpy(images[rows]).permute(0, 3, 1, 2).float().div(255.0).to(device)
        y = {n: torch.from_numpy(np.asarray(labels[n])[rows]).to(device) for n in names}
        m = {n: torch.from_numpy(np.asarray(masks[n], dtype=bool)[rows]).to(device) for n in names}
        loss = task_losses(tasks, model(x), y, m).sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def _predict(model, inputs: np.ndarray, tasks, device) -> dict:
    """Class predictions per task for float inputs (N,H,W,C) in [0, 1]."""
    from mtlue.models.losses import predictions

    out = {t.name: [] for t in tasks}
    with torch.no_grad():
        for lo in range(0, len(inputs), 512):
            x = torch.from_numpy(np.ascontiguousarray(inputs[lo:lo + 512])).permute(0, 3, 1, 2).float().to(device)
            outputs = model(x)
            for t in tasks:
                out[t.name].append(predictions(t, outputs[t.name]).cpu().numpy())
    return {n: np.concatenate(v) for n, v in out.items()}


def _scores(preds: dict, labels: dict, masks: dict, train_labels: dict, tasks) -> dict:
    out = {}
    for t in tasks:
        present = np.asarray(masks[t.name], dtype=bool)
        y = np.asarray(labels[t.name]).astype(np.int64)
        out[t.name] = _normalised_score(t, y[present], preds[t.name][present], np.asarray(train_labels[t.name]))
    return out


def _split_arrays(source: Source, split: str, limit: int) -> dict:
    count = min(limit, source.size(split))
    batch = next(source.batches(split, count, 0, count))
    return {"images": batch.images, "labels": batch.labels, "masks": batch.masks}


def shortcut_speed(protected: Source, clean: Source, tasks, device, deltas: dict, seed: int = 0,
                   limit: int | None = None) -> dict:
    """One-epoch small_cnn victims: fit of the release vs clean test after clean training (see module doc)."""
    tasks = _classification_tasks(tasks)
    if limit is None:
        height, width = protected.image_shape[:2]
        limit = max(256, SPEED_PIXELS // max(1, height * width))
    release = _split_arrays(protected, "train", limit)
    clean_train = _split_arrays(clean, "train", limit)
    clean_test = _split_arrays(clean, "test", limit)
    on_release = _one_epoch_victim(release["images"], release["labels"], release["masks"], tasks, device, seed)
    on_clean = _one_epoch_victim(clean_train["images"], clean_train["labels"], clean_train["masks"], tasks, device, seed)
    delta_only = np.clip(0.5 + deltas["delta"] / 255.0, 0.0, 1.0)
    as_float = lambda images: images.astype(np.float32) / 255.0  # noqa: E731
    train_labels = release["labels"]
    return {
        "release_fit_after_1_epoch": _scores(_predict(on_release, as_float(release["images"]), tasks, device),
                                             release["labels"], release["masks"], train_labels, tasks),
        "clean_test_after_1_epoch": _scores(_predict(on_clean, as_float(clean_test["images"]), tasks, device),
                                            clean_test["labels"], clean_test["masks"], clean_train["labels"], tasks),
        "release_victim_on_clean_test": _scores(_predict(on_release, as_float(clean_test["images"]), tasks, device),
                                                clean_test["labels"], clean_test["masks"], train_labels, tasks),
        "release_victim_on_delta_only": _scores(_predict(on_release, delta_only, tasks, device),
                                                deltas["labels"], deltas["masks"], train_labels, tasks),
    }


def diagnose(protected: Source, clean: Source, epsilon: float, device=None, seed: int = 0, speed: bool = True) -> dict:
    """All four diagnostics as one JSON-able dict (ε in 1/255 units)."""
    device = torch.device("cpu") if device is None else device
    tasks = list(protected.tasks)
    deltas = read_deltas(protected, clean)
    report = {
        "samples": int(len(deltas["delta"])),
        "epsilon": float(epsilon),
        "budget_stored": budget_stored(deltas["delta"], deltas["clean"], epsilon),
        "intra_class_variance": intra_class_variance(deltas["delta"], deltas["labels"], deltas["masks"], tasks),
        "shortcut_presence": shortcut_presence(deltas["delta"], deltas["labels"], deltas["masks"], tasks, seed),
        "skipped": [t.name for t in tasks if t.kind not in ("binary", "multiclass")],
    }
    if speed:
        report["shortcut_speed"] = shortcut_speed(protected, clean, tasks, device, deltas, seed)
    return report


DIAGNOSTICS_LEGEND = (
    "Per task, scores as (score − chance)/(1 − chance): probe(δ) = a linear probe on δ = stored − clean alone "
    "(shortcut presence: near 1 means δ tells the label); intra-var = within-class over total variance of δ "
    "(0 = one pattern per class); fit@1ep = a fresh small_cnn after one epoch on the release, scored on the "
    "release (how fast the shortcut is fitted); clean@1ep = the same after one epoch on clean data, scored on the "
    "clean test split (how fast natural features are learned); δ-only = the release-trained victim scored on "
    "0.5 + δ. A protecting release shows probe(δ) and fit@1ep near 1 and well above clean@1ep. Budget stored: "
    "mean |δ| against ε and the share of pixels clipping at 0/255 or rounding cut short of ε.")


def format_diagnostics(report: dict) -> str:
    """A small text table: one row per task, one column per diagnostic."""
    speed = report.get("shortcut_speed") or {}
    columns = [("probe(δ)", report.get("shortcut_presence", {})), ("intra-var", report.get("intra_class_variance", {})),
               ("fit@1ep", speed.get("release_fit_after_1_epoch", {})),
               ("clean@1ep", speed.get("clean_test_after_1_epoch", {})),
               ("δ-only", speed.get("release_victim_on_delta_only", {}))]
    names = sorted({n for _, values in columns for n in values}, key=str)
    lines = ["task".ljust(16) + "".join(title.rjust(11) for title, _ in columns)]
    for name in names:
        cells = "".join((f"{values[name]:.3f}" if name in values else "-").rjust(11) for _, values in columns)
        lines.append(str(name)[:16].ljust(16) + cells)
    budget = report.get("budget_stored", {})
    if budget.get("mean_abs_over_epsilon") is not None:
        lines.append(f"budget stored: mean |δ| = {budget['mean_abs_delta']:.2f}/255 "
                     f"({budget['mean_abs_over_epsilon']:.2f} of ε = {report['epsilon']:g}); "
                     f"{budget['cut_share']:.1%} of pixels cut short of ε ({budget['cut_at_clip_share']:.1%} at 0/255)")
    return "\n".join(lines)
