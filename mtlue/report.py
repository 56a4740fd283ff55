"""Verification report: the verdict rule, report.json, report.md, a CLI table and PNG figures.

The verify/pipeline code builds a `VerificationResult` (one `VictimRow` per weighting × defense,
each with one `TaskMetric` per task) and calls `write_report(result, out_dir, samples)`.
Accuracy-type metrics (accuracy, balanced_accuracy, auc) are in percent; `TaskMetric.from_fractions`
converts the [0, 1] values of mtlue.metrics. A row's "mean accuracy" is the unweighted mean over its
tasks with an accuracy-type metric that have both a protected value and a floor (mtlue.metrics'
majority floor; 1/C for balanced accuracy, 50 for AUC). Other metrics (mae) are shown, never averaged.

Verdict rule (`verdict`): PASS when every row trained without a defense has
protected mean accuracy (last epoch) <= mean floor + margin; rows with a defense are reported
with the same check but never change the verdict.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from mtlue.errors import ConfigError

ACCURACY_METRICS = ("accuracy", "balanced_accuracy", "auc")  # percent; enter the row means
LOWER_IS_BETTER = ("mae", "abs_err", "rel_err", "mean_angle_error", "loss")
NO_DEFENSE = ("none", "", None)
SCHEMA = "mtlue-report/1"


@dataclass
class TaskMetric:
    """One task of one weighting × defense pair, measured on the clean test split.

    `clean`: victim trained on clean data (same weighting and defense), last epoch;
    `protected_peak` / `protected_last`: victim trained on the protected store, best / last epoch;
    `floor`: the metric of a predictor that ignores the image (mtlue.metrics.majority_floor: the train
    majority class scored on the test labels); None when unknown. Values in percent for accuracy types.
    """

    task: str
    kind: str  # TaskSpec.kind: binary | multiclass | regression | ...
    metric: str  # accuracy | balanced_accuracy | auc (percent, in the means) | mae (shown only)
    clean: float | None = None
    protected_peak: float | None = None
    protected_last: float | None = None
    floor: float | None = None

    @property
    def in_mean(self) -> bool:
        return self.metric in ACCURACY_METRICS and self.protected_last is not None and self.floor is not None

    @classmethod
    def from_fractions(cls, task: str, kind: str, metric: str, clean=None, protected_peak=None, protected_last=None,
                       floor=None) -> "TaskMetric":
        """Build from mtlue.metrics values: accuracy-type metrics in [0, 1] become percent; NaN becomes None."""
        scale = 100.0 if metric in ACCURACY_METRICS else 1.0

        def convert(value):
            return None if value is None or not math.isfinite(value) else float(value) * scale

        return cls(task, kind, metric, convert(clean), convert(protected_peak), convert(protected_last), convert(floor))

    @property
    def higher_is_better(self) -> bool:
        return self.metric not in LOWER_IS_BETTER


@dataclass
class VictimRow:
    """The victims of one task weighting under one defense ('none' = plain training)."""

    weighting: str
    defense: str = "none"
    tasks: list = field(default_factory=list)  # list[TaskMetric]

    def _mean(self, attribute: str) -> float | None:
        values = [getattr(t, attribute) for t in self.tasks if t.in_mean]
        values = [v for v in values if v is not None and math.isfinite(v)]
        return float(np.mean(values)) if values else None

    @property
    def clean_mean(self) -> float | None:
        return self._mean("clean")

    @property
    def protected_last_mean(self) -> float | None:
        return self._mean("protected_last")

    @property
    def protected_peak_mean(self) -> float | None:
        """Mean over tasks of each task's peak-over-epochs accuracy."""
        return self._mean("protected_peak")

    @property
    def floor_mean(self) -> float | None:
        return self._mean("floor")

    @property
    def in_verdict(self) -> bool:
        return self.defense in NO_DEFENSE

    def holds(self, margin: float) -> bool | None:
        """protected mean (last epoch) <= floor mean + margin; None when the row has no accuracy task."""
        protected, floor = self.protected_last_mean, self.floor_mean
        if protected is None or floor is None:
            return None
        return protected <= floor + margin

    @classmethod
    def from_json(cls, d: dict) -> "VictimRow":
        return cls(d["weighting"], d.get("defense", "none"), [TaskMetric(**t) for t in d["tasks"]])


@dataclass
class SampleGrid:
    """Example training images for the sample figure: uint8 (N, H, W, C) clean and protected arrays."""

    clean: np.ndarray
    protected: np.ndarray
    epsilon: float = 8 / 255  # L∞ budget in [0, 1] units; δ is shown amplified ×127/(255·ε) around 128
    indices: list | None = None


@dataclass
class VerificationResult:
    """Everything a report shows. `notes` holds free-form JSON-able context (protection record, seeds)."""

    rows: list  # list[VictimRow]
    margin: float = 10.0
    title: str = "mtlue verification"
    dataset: str = ""
    method: str = ""
    backbone: str = ""
    epochs: int | None = None
    notes: dict = field(default_factory=dict)

    def clean_reference(self) -> dict:
        """Clean-data mean accuracy per weighting, from its no-defense row."""
        return {r.weighting: r.clean_mean for r in self.rows if r.in_verdict}

    def verdict(self) -> str:
        return verdict(self.rows, self.margin)

    def verdict_or_reason(self) -> tuple:
        """(verdict, None), or (None, why) when the rows cannot be judged (no accuracy task, fractions)."""
        try:
            return self.verdict(), None
        except ConfigError as exc:
            return None, str(exc)

    def to_json(self) -> dict:
        outcome, reason = self.verdict_or_reason()
        rows = []
        for r in self.rows:
            row = asdict(r)
            row.update(clean_mean=r.clean_mean, protected_last_mean=r.protected_last_mean,
                       protected_peak_mean=r.protected_peak_mean, floor_mean=r.floor_mean,
                       holds=r.holds(self.margin), in_verdict=r.in_verdict)
            rows.append(row)
        return _plain({
            "schema": SCHEMA, "title": self.title, "dataset": self.dataset, "method": self.method,
            "backbone": self.backbone, "epochs": self.epochs, "margin": self.margin,
            "verdict": outcome, "verdict_error": reason,
            "rule": "PASS iff every weighting without defense has protected mean accuracy (last epoch, %) "
                    "<= mean majority floor + margin; defense rows are reported and do not change the verdict",
            "clean_reference": self.clean_reference(), "rows": rows, "notes": self.notes,
        })

    @classmethod
    def from_json(cls, d: dict) -> "VerificationResult":
        keys = ("margin", "title", "dataset", "method", "backbone", "epochs", "notes")
        return cls(rows=[VictimRow.from_json(r) for r in d["rows"]], **{k: d[k] for k in keys if k in d})


def verdict(rows, margin: float = 10.0) -> str:
    """'PASS' when every no-defense row's protected mean accuracy (last epoch) <= its mean floor + margin.

    Rows with a defense never affect the verdict. Raises ConfigError when no no-defense row has an
    accuracy task to judge, or when every floor is <= 1 (values given as fractions, not percent).
    """
    floors = [t.floor for r in rows for t in r.tasks if t.in_mean]
    if floors and max(floors) <= 1.0:
        raise ConfigError("verdict: accuracies look like fractions in [0, 1]; report values are percent "
                          "(build them with TaskMetric.from_fractions)")
    judged = [r.holds(margin) for r in rows if r.in_verdict]
    judged = [h for h in judged if h is not None]
    if not judged:
        raise ConfigError("verdict: no weighting trained without defense has an accuracy task with a floor to judge")
    return "PASS" if all(judged) else "FAIL"


def _plain(value):
    """JSON-safe copy: numpy scalars/arrays to python, NaN/inf to None."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value


def _fmt(value, digits: int = 1) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


VERDICT_HEADER = ("weighting", "defense", "clean mean", "protected last", "protected peak", "floor mean",
                  "limit", "result", "in verdict")


def verdict_table(rows, margin: float) -> list:
    """Rows of the verdict table as strings (VERDICT_HEADER columns), in the given row order."""
    table = []
    for r in rows:
        holds = r.holds(margin)
        floor = r.floor_mean
        table.append((r.weighting, r.defense or "none", _fmt(r.clean_mean), _fmt(r.protected_last_mean),
                      _fmt(r.protected_peak_mean), _fmt(floor), _fmt(None if floor is None else floor + margin),
                      "–" if holds is None else ("PASS" if holds else "FAIL"), "yes" if r.in_verdict else "no"))
    return table


def task_table(rows) -> tuple:
    header = ("weighting", "defense", "task", "kind", "metric", "clean", "protected last", "protected peak", "floor")
    body = [(r.weighting, r.defense or "none", t.task, t.kind, t.metric, _fmt(t.clean), _fmt(t.protected_last),
             _fmt(t.protected_peak), _fmt(t.floor)) for r in rows for t in r.tasks]
    return header, body


def format_text_table(header, body) -> str:
    """Plain aligned columns (for the CLI)."""
    widths = [max(len(str(c)) for c in column) for column in zip(header, *body)]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(line, widths)).rstrip() for line in (header, *body)]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def format_verdict_text(result: VerificationResult) -> str:
    """The CLI summary: verdict table, then the verdict line with the rule's margin."""
    outcome, reason = result.verdict_or_reason()
    line = (f"verdict: {outcome} (protected mean accuracy <= floor + {result.margin:g} points, no defense)"
            if outcome else f"verdict: none ({reason})")
    return format_text_table(VERDICT_HEADER, verdict_table(result.rows, result.margin)) + "\n" + line


def _markdown_table(header, body) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in line) + " |" for line in body]
    return "\n".join(lines)


def render_markdown(result: VerificationResult, figures: dict | None = None) -> str:
    """report.md text: context, verdict table, per-task table, figure links."""
    outcome, reason = result.verdict_or_reason()
    outcome = outcome or f"none ({reason})"
    context = [f"{k}: {v}" for k, v in (("dataset", result.dataset), ("method", result.method),
                                         ("backbone", result.backbone), ("epochs", result.epochs)) if v not in ("", None)]
    parts = [f"# {result.title}", "", f"**Verdict: {outcome}**", ""]
    if context:
        parts += ["; ".join(context), ""]
    parts += [f"Rule: every weighting trained without a defense must reach a protected mean accuracy (last epoch, "
              f"clean test split) at or below the mean majority-class floor + {result.margin:g} points. Rows with a "
              f"defense are shown with the same check and do not change the verdict. Values in percent.", "",
              "## Verdict table", "", _markdown_table(VERDICT_HEADER, verdict_table(result.rows, result.margin)), "",
              "## Per task", "", _markdown_table(*task_table(result.rows)), ""]
    if figures:
        parts += ["## Figures", ""] + [f"![{name}]({path})" for name, path in figures.items()] + [""]
    return "\n".join(parts)


def amplify_perturbation(clean: np.ndarray, protected: np.ndarray, epsilon: float) -> np.ndarray:
    """δ shown as uint8: clip(128 + (protected − clean) · 127 / (255·ε), 0, 255); ±ε maps to 1 / 255."""
    delta = protected.astype(np.float64) - clean.astype(np.float64)
    scale = 127.0 / max(255.0 * float(epsilon), 1e-12)
    return np.clip(np.round(128 + delta * scale), 0, 255).astype(np.uint8)


def _new_figure(width: float, height: float):
    from matplotlib.figure import Figure  # no pyplot: no global backend state, renders with Agg

    return Figure(figsize=(width, height), dpi=100)


def _bars(ax, groups, series: dict, ylabel: str) -> None:
    """Grouped bars: one group per entry of `groups`, one bar per series (None drawn as missing)."""
    width = 0.8 / max(len(series), 1)
    x = np.arange(len(groups))
    for i, (label, values) in enumerate(series.items()):
        heights = [np.nan if v is None else v for v in values]
        ax.bar(x + (i - (len(series) - 1) / 2) * width, heights, width, label=label)
    ax.set_xticks(x)
    ax.set_xticklabels(groups, rotation=30 if len(groups) > 4 else 0, ha="right" if len(groups) > 4 else "center")
    ax.set_ylabel(ylabel)
    top = np.nanmax([np.nan if v is None else v for values in series.values() for v in values] + [1.0])
    ax.set_ylim(0, 1.3 * top)  # headroom for the legend row
    ax.legend(fontsize=8, loc="upper center", ncol=len(series), frameon=False)


def plot_clean_vs_protected(result: VerificationResult, path: Path) -> None:
    """Grouped bars per weighting (no defense): clean, protected last, protected peak, floor mean accuracy."""
    rows = [r for r in result.rows if r.in_verdict]
    fig = _new_figure(max(5, 1.5 * len(rows) + 2), 4)
    ax = fig.add_subplot()
    _bars(ax, [r.weighting for r in rows], {
        "clean": [r.clean_mean for r in rows], "protected (last)": [r.protected_last_mean for r in rows],
        "protected (peak)": [r.protected_peak_mean for r in rows], "floor": [r.floor_mean for r in rows]},
        "mean accuracy (%)")
    for i, r in enumerate(rows):
        if r.floor_mean is not None:
            ax.hlines(r.floor_mean + result.margin, i - 0.45, i + 0.45, colors="black", linestyles="dashed", linewidth=1)
    ax.set_title(f"Clean vs protected training (dashed: floor + {result.margin:g}, the pass limit)")
    fig.tight_layout()
    fig.savefig(path)


def plot_per_task(result: VerificationResult, path: Path) -> None:
    """One panel per weighting (no defense): per-task clean, protected last and floor."""
    rows = [r for r in result.rows if r.in_verdict] or result.rows[:1]
    fig = _new_figure(min(30, max(6, 0.8 * max((len(r.tasks) for r in rows), default=1) + 3)), 3 * max(len(rows), 1))
    for i, row in enumerate(rows):
        ax = fig.add_subplot(len(rows), 1, i + 1)
        _bars(ax, [f"{t.task}\n({t.metric})" for t in row.tasks], {
            "clean": [t.clean for t in row.tasks], "protected (last)": [t.protected_last for t in row.tasks],
            "floor": [t.floor for t in row.tasks]}, "value")
        ax.set_title(f"{row.weighting}: per task", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)


def plot_defense_heatmap(result: VerificationResult, path: Path) -> None:
    """Heat-map of protected mean accuracy (last epoch), weighting × defense, values written in cells."""
    weightings = list(dict.fromkeys(r.weighting for r in result.rows))
    defenses = list(dict.fromkeys(r.defense or "none" for r in result.rows))
    grid = np.full((len(weightings), len(defenses)), np.nan)
    for r in result.rows:
        if r.protected_last_mean is not None:
            grid[weightings.index(r.weighting), defenses.index(r.defense or "none")] = r.protected_last_mean
    fig = _new_figure(max(4, 1.1 * len(defenses) + 2), max(3, 0.6 * len(weightings) + 1.5))
    ax = fig.add_subplot()
    image = ax.imshow(np.ma.masked_invalid(grid), cmap="viridis", vmin=0, vmax=100, aspect="auto")
    ax.set_xticks(range(len(defenses)))
    ax.set_xticklabels(defenses, rotation=30, ha="right")
    ax.set_yticks(range(len(weightings)))
    ax.set_yticklabels(weightings)
    for (i, j), value in np.ndenumerate(grid):
        ax.text(j, i, "–" if np.isnan(value) else f"{value:.1f}", ha="center", va="center",
                color="white" if np.isnan(value) or value < 60 else "black", fontsize=8)
    fig.colorbar(image, ax=ax, label="protected mean accuracy (%)")
    ax.set_title("Defenses: protected mean accuracy (last epoch)")
    fig.tight_layout()
    fig.savefig(path)


def plot_samples(samples: SampleGrid, path: Path) -> None:
    """Rows: clean, protected, δ amplified ×127/(255·ε) around 128; one column per sample."""
    clean, protected = np.asarray(samples.clean), np.asarray(samples.protected)
    if clean.shape != protected.shape or clean.ndim != 4:
        raise ConfigError(f"report samples: clean {clean.shape} and protected {protected.shape} must both be (N, H, W, C)")
    delta = amplify_perturbation(clean, protected, samples.epsilon)
    count = len(clean)
    fig = _new_figure(1.3 * count + 1, 4.2)
    titles = ("clean", "protected", f"δ ×{127 / (255 * samples.epsilon):.0f}")
    for row, (title, images) in enumerate(zip(titles, (clean, protected, delta))):
        for col in range(count):
            ax = fig.add_subplot(3, count, row * count + col + 1)
            image = images[col]
            ax.imshow(image[..., 0] if image.shape[-1] == 1 else image, cmap="gray", vmin=0, vmax=255)
            ax.set_xticks([])
            ax.set_yticks([])
            if col == 0:
                ax.set_ylabel(title, fontsize=9)
            if row == 0 and samples.indices is not None:
                ax.set_title(f"#{samples.indices[col]}", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)


def write_report(result: VerificationResult, out_dir, samples: SampleGrid | None = None) -> dict:
    """Write report.json, report.md and figures/*.png under `out_dir`; return {name: path}."""
    out_dir = Path(out_dir)
    figure_dir = out_dir / "figures"
    figure_dir.mkdir(parents=True, exist_ok=True)
    figures = {"clean_vs_protected": figure_dir / "clean_vs_protected.png",
               "per_task": figure_dir / "per_task.png",
               "defense_heatmap": figure_dir / "defense_heatmap.png"}
    plot_clean_vs_protected(result, figures["clean_vs_protected"])
    plot_per_task(result, figures["per_task"])
    plot_defense_heatmap(result, figures["defense_heatmap"])
    if samples is not None:
        figures["samples"] = figure_dir / "samples.png"
        plot_samples(samples, figures["samples"])
    paths = {"json": out_dir / "report.json", "markdown": out_dir / "report.md"}
    paths["json"].write_text(json.dumps(result.to_json(), indent=2, allow_nan=False) + "\n")
    relative = {name: str(path.relative_to(out_dir)) for name, path in figures.items()}
    paths["markdown"].write_text(render_markdown(result, relative))
    return {**paths, **figures}
