"""Verification: retrain victims on a protected release and on clean data, judge the collapse.

For every weighting, one clean reference victim (clean train split) and one protected victim
(the release) per defense are trained and evaluated on the clean test split. Each victim is
its own fingerprinted stage under `OUT/victims/`, so an interrupted verification resumes
victim by victim. The verdict rule is `mtlue.report.verdict`.
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from mtlue.data.base import Source
from mtlue.errors import ConfigError
from mtlue.recipe import PAPER_WEIGHTINGS
from mtlue.stages import Stage, fingerprint, read_json
from mtlue.train import TrainConfig, train_model

STL_ROW = "stl"


@dataclass(frozen=True)
class VerifyConfig:
    """The victim grid: weightings × defenses, the victim schedule, and the verdict margin."""

    victim: TrainConfig = field(default_factory=TrainConfig)
    weightings: tuple = PAPER_WEIGHTINGS
    defenses: tuple = ("none",)
    defense_weightings: tuple | None = None  # weightings that get the defense rows (default: all)
    stl: bool = False
    margin: float = 10.0
    sample_count: int = 8

    def __post_init__(self):
        if not self.weightings and not self.stl:
            raise ConfigError("--weightings: name at least one weighting")
        if "none" not in self.defenses:
            object.__setattr__(self, "defenses", ("none",) + tuple(self.defenses))

    def grid(self) -> list:
        """(row label, TrainConfig, defense) for every victim trained on the protected release."""
        rows = []
        for label, config in self.row_configs():
            for defense in self.defenses:
                if defense != "none" and self.defense_weightings is not None and label not in self.defense_weightings:
                    continue
                rows.append((label, config, defense))
        return rows

    def row_configs(self) -> list:
        configs = [(w, dataclasses.replace(self.victim, weighting=w, stl=False)) for w in self.weightings]
        if self.stl:
            configs.append((STL_ROW, dataclasses.replace(self.victim, weighting="ew", stl=True)))
        return configs


def data_identity(source: Source) -> dict:
    """What identifies a training set in a victim fingerprint: its store checksums or its spec."""
    manifest = getattr(source, "manifest", None)  # ShardSource: the store's parsed manifest
    if manifest:
        return {"store": [s.get("sha256") for split in manifest.get("splits", {}).values() for s in split.get("shards", [])]}
    return {"source": getattr(source, "spec", None) or source.name, "sizes": {s: source.size(s) for s in source.splits()}}


def train_victim(run_dir: str, label: str, config: TrainConfig, defense: str, train_data: Source, test_data: Source,
                 device, progress: bool) -> dict:
    """Train (or reuse) one victim; returns its history (metrics.json)."""
    from mtlue.defenses import build_defense

    config = dataclasses.replace(config, defense=None if defense == "none" else defense)
    params = {"train": asdict(config), "data": data_identity(train_data), "test": data_identity(test_data),
              "defense": defense}
    stage = Stage(run_dir, label, fingerprint(params))
    metrics_path = stage.file("metrics.json")
    if stage.is_done() and os.path.isfile(metrics_path):
        return read_json(metrics_path)
    stage.begin(params)
    started = time.perf_counter()
    hook = build_defense(defense, train_data.tasks, generator=torch.Generator().manual_seed(config.seed + 7))
    if progress:
        print(f"victim {label}: training {config.epochs} epochs", flush=True)
    result = train_model(config, train_data.dataset("train"), test_data.dataset("test"), train_data.tasks, device,
                         out_dir=stage.path, defense=hook, progress=progress)
    stage.finish(params, {"mean": result.history.get("mean")}, time.perf_counter() - started)
    return read_json(metrics_path)


def _task_metrics(tasks, clean_history: dict, protected_history: dict) -> list:
    from mtlue.report import TaskMetric

    rows = []
    for task in tasks:
        metric = protected_history["metric"][task.name]
        rows.append(TaskMetric.from_fractions(
            task.name, task.kind, metric,
            clean=_value(clean_history, "last", task.name),
            protected_peak=_value(protected_history, "peak", task.name),
            protected_last=_value(protected_history, "last", task.name),
            floor=_value(protected_history, "floor", task.name)))
    return rows


def _value(history: dict, key: str, task: str):
    value = history.get(key, {}).get(task)
    return float("nan") if value is None else float(value)


def check_same_tasks(protected: Source, clean: Source) -> None:
    mine = [t.to_json() for t in protected.tasks]
    theirs = [t.to_json() for t in clean.tasks]
    if mine != theirs:
        names = {t["name"] for t in mine} ^ {t["name"] for t in theirs}
        culprit = ", ".join(sorted(names)) if names else "kinds/classes differ"
        raise ConfigError(f"the protected store and --clean source have different tasks ({culprit})")


def sample_grid(protected: Source, clean: Source, count: int, epsilon: float):
    """First `count` protected train images next to the clean images with the same global index."""
    from mtlue.report import SampleGrid

    count = min(count, protected.size("train"), clean.size("train"))
    if count == 0:
        return None
    stored = next(protected.batches("train", count, 0, count))
    original = next(clean.batches("train", count, 0, count))
    if not np.array_equal(stored.index, original.index):
        return None
    return SampleGrid(clean=original.images, protected=stored.images, epsilon=epsilon, indices=stored.index.tolist())


def train_victim_grid(protected: Source, clean: Source, config: VerifyConfig, victims_dir: str, device,
                      progress: bool = True) -> list:
    """Train every clean reference and protected victim (each resumable); returns the VictimRows."""
    from mtlue.report import VictimRow

    check_same_tasks(protected, clean)
    if "test" not in clean.splits():
        raise ConfigError(f"--clean {getattr(clean, 'spec', clean.name)}: has no test split to evaluate on")
    clean_histories = {}
    for label, victim_config in config.row_configs():
        clean_histories[label] = train_victim(victims_dir, f"clean-{label}", victim_config, "none", clean, clean,
                                              device, progress)
    rows = []
    for label, victim_config, defense in config.grid():
        history = train_victim(victims_dir, f"protected-{label}-{defense}", victim_config, defense, protected, clean,
                               device, progress)
        rows.append(VictimRow(weighting=label, defense=defense,
                              tasks=_task_metrics(protected.tasks, clean_histories[label], history)))
    return rows


def write_verification(rows: list, protected: Source, clean: Source, config: VerifyConfig, out_dir: str,
                       title: str = "mtlue verification", notes: dict | None = None):
    """Build the VerificationResult from the rows and write report.json, report.md and figures."""
    from mtlue.report import VerificationResult, write_report

    record = (getattr(protected, "manifest", None) or {}).get("protection") or {}
    epsilon = float(record.get("epsilon", 8)) / 255.0
    result = VerificationResult(
        rows=rows, margin=config.margin, title=title, dataset=getattr(clean, "spec", clean.name),
        method=" + ".join(str(record[k]) for k in ("method", "base") if record.get(k)) or "unknown",
        backbone=config.victim.backbone, epochs=config.victim.epochs,
        notes={"protection": record, **(notes or {})})
    write_report(result, out_dir, samples=sample_grid(protected, clean, config.sample_count, epsilon))
    return result


def run_verification(protected: Source, clean: Source, config: VerifyConfig, out_dir: str, device,
                     progress: bool = True, title: str = "mtlue verification", notes: dict | None = None):
    """Train the victim grid into OUT/victims and write the report into OUT; returns the result."""
    rows = train_victim_grid(protected, clean, config, os.path.join(out_dir, "victims"), device, progress)
    return write_verification(rows, protected, clean, config, out_dir, title, notes)


def verification_summary(result) -> dict:
    """The short form appended to the store's manifest."""
    outcome, reason = result.verdict_or_reason()
    return {
        "verdict": outcome, "reason": reason, "margin": result.margin, "backbone": result.backbone,
        "epochs": result.epochs,
        "rows": [{"weighting": r.weighting, "defense": r.defense, "clean_mean": r.clean_mean,
                  "protected_last_mean": r.protected_last_mean, "floor_mean": r.floor_mean,
                  "holds": r.holds(result.margin)} for r in result.rows],
        "verified": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
