"""Rendering a verification (mtlue.verdict): the CLI table, report.json, report.md and PNG figures.

Figures: `learning_curves.png` (per task, clean vs protected test metric over epochs),
`learnability.png` (worst-seed retained learnability per profile × weighting, with the limit),
`defense_heatmap.png` (learnability, profile/weighting × defense) and `samples.png` (clean,
protected, amplified δ).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mtlue.errors import ConfigError
from mtlue.jsonio import write_json
from mtlue.store.layout import write_text_atomic
from mtlue.verdict import NO_DEFENSE, VerificationResult

PERCENT_METRICS = ("accuracy", "balanced_accuracy", "auc", "miou", "pixel_accuracy", "within_11.25", "within_22.5",
                   "within_30")


@dataclass
class SampleGrid:
    """Example training images for the sample figure: uint8 (N, H, W, C) clean and protected arrays."""

    clean: np.ndarray
    protected: np.ndarray
    epsilon: float = 8 / 255  # L∞ budget in [0, 1] units; δ is shown amplified ×127/(255·ε) around 128
    indices: list | None = None


def _fmt(value, digits: int = 3) -> str:
    return "–" if value is None or (isinstance(value, float) and not np.isfinite(value)) else f"{value:.{digits}f}"


def _value(value, metric: str) -> str:
    """A metric value as shown: accuracy-type metrics in percent, errors as they are."""
    if value is None:
        return "–"
    return f"{100 * value:.1f}" if metric in PERCENT_METRICS else f"{value:.3g}"


VERDICT_HEADER = ("profile", "weighting", "defense", "seeds", "learnability (per seed)", "worst", "limit", "result",
                  "in verdict")


def verdict_table(result: VerificationResult) -> list:
    """Rows of the verdict table (VERDICT_HEADER columns): one per profile × weighting × defense."""
    table = []
    for g in result.groups():
        holds = g.holds(result.rules)
        table.append((g.profile, g.weighting, g.defense, ",".join(str(r.seed) for r in g.rows),
                      " / ".join(_fmt(s) for s in g.scores), _fmt(g.worst), f"{result.rules.max_learnability:g}",
                      "–" if holds is None else ("PASS" if holds else "FAIL"), "yes" if g.in_verdict else "no"))
    return table


TASK_HEADER = ("profile", "weighting", "defense", "seed", "task", "metric", "chance", "clean", "protected last",
               "protected peak*", "learnability", "weight")


DELTA_HEADER = ("profile", "weighting", "defense", "seed", "Δm % (every metric)")


def delta_table(result: VerificationResult) -> list:
    """Per protected victim: Δm against its clean reference (LibMTL's Δp; negative = worse than clean)."""
    return [(r.profile, r.weighting, r.defense, str(r.seed), _fmt(r.delta_m, 1)) for r in result.rows]


def task_table(result: VerificationResult) -> list:
    return [(r.profile, r.weighting, r.defense, str(r.seed), t.task, t.metric, _value(t.chance, t.metric),
             _value(t.clean, t.metric), _value(t.protected_last, t.metric), _value(t.protected_peak, t.metric),
             _fmt(t.learnability), _fmt(t.weight)) for r in result.rows for t in r.tasks]


def format_text_table(header, body) -> str:
    """Plain aligned columns (for the CLI)."""
    widths = [max(len(str(c)) for c in column) for column in zip(header, *body)]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(line, widths)).rstrip() for line in (header, *body)]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def verdict_line(result: VerificationResult) -> str:
    outcome, reason = result.verdict_or_reason()
    if outcome is None:
        return f"verdict: none ({reason})"
    return f"verdict: {outcome.outcome} — {outcome.reason}"


def format_verdict_text(result: VerificationResult) -> str:
    """The CLI summary: the verdict table, what was not run, and the verdict line."""
    parts = [format_text_table(VERDICT_HEADER, verdict_table(result))]
    if result.profiles:
        parts.append("profiles:\n" + "\n".join(f"  {name}: {text}" for name, text in result.profiles.items()))
    not_run = result.not_run()
    if not_run:
        parts.append("not run:\n" + "\n".join(f"  - {line}" for line in not_run))
    parts.append("learnability: 0 = nothing learned beyond chance, 1 = as much as from clean data")
    parts.append(verdict_line(result))
    return "\n".join(parts)


def _markdown_table(header, body) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in line) + " |" for line in body]
    return "\n".join(lines)


def render_markdown(result: VerificationResult, figures: dict | None = None) -> str:
    """report.md text: verdict, rule, profiles, score table, per-task table, what was not run, figures."""
    from mtlue.verdict import RULE_TEXT, REPRODUCIBILITY

    outcome, reason = result.verdict_or_reason()
    verdict = f"{outcome.outcome}** — {outcome.reason}" if outcome else f"none** ({reason})"
    context = [f"{k}: {v}" for k, v in (("dataset", result.dataset), ("method", result.method),
                                         ("surrogate backbone", result.surrogate_backbone)) if v]
    parts = [f"# {result.title}", "", f"**Verdict: {verdict}", ""]
    if context:
        parts += ["; ".join(context), ""]
    parts += ["Rule: " + RULE_TEXT.format(max=result.rules.max_learnability, gain=result.rules.min_clean_gain), "",
              "## Attacker profiles", ""]
    parts += [f"- **{name}**: {text}" for name, text in result.profiles.items()] + [""]
    parts += ["## Score table", "", "Retained learnability per profile × weighting × defense (0 = nothing learned "
              "beyond chance, 1 = as much as from clean data), one value per victim seed; the worst seed decides.",
              "", _markdown_table(VERDICT_HEADER, verdict_table(result)), "",
              "## Per task", "", "Accuracy-type values in percent. *Peak: the best epoch, chosen on the test data "
              "(optimistic for the attacker, never judged); the last epoch decides.", "",
              _markdown_table(TASK_HEADER, task_table(result)), "",
              "## Δm", "", "Each protected victim against its clean reference, last epoch, as LibMTL counts it: "
              "the signed relative change of every metric (+ when better), averaged within each task, then over "
              "tasks; reported, never judged.", "", _markdown_table(DELTA_HEADER, delta_table(result)), "",
              "## Not run", ""]
    parts += [f"- {line}" for line in result.not_run()] or ["- (the whole standard grid was run)"]
    diagnostics = (result.notes or {}).get("diagnostics")
    if diagnostics:
        from mtlue.diagnostics import DIAGNOSTICS_LEGEND, format_diagnostics

        parts += ["", "## Diagnostics: why the release protects or not", "", DIAGNOSTICS_LEGEND, "", "```",
                  format_diagnostics(diagnostics), "```"]
    parts += ["", "## Reproducibility", "", REPRODUCIBILITY, ""]
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


def plot_learning_curves(result: VerificationResult, path: Path) -> None:
    """One panel per task: test metric per epoch, clean (dashed) vs protected (solid), seed of the clean
    reference, for every no-defense profile × weighting; chance dotted."""
    rows = [r for r in result.rows if r.in_verdict and r.seed == r.clean_seed] or [r for r in result.rows if r.in_verdict]
    tasks = [t.task for t in rows[0].tasks] if rows else []
    columns = min(4, max(1, len(tasks)))
    panel_rows = max(1, -(-len(tasks) // columns))
    fig = _new_figure(4 * columns, 3 * panel_rows + 0.8)
    colours = [f"C{i % 10}" for i in range(len(rows))]
    for k, name in enumerate(tasks):
        ax = fig.add_subplot(panel_rows, columns, k + 1)
        for row, colour in zip(rows, colours):
            task = row.tasks[k]
            for curve, style, role in ((task.clean_curve, "--", "clean"), (task.protected_curve, "-", "protected")):
                values = [np.nan if v is None else v for v in curve]
                ax.plot(range(1, len(values) + 1), values, style, color=colour,
                        label=f"{row.profile}/{row.weighting} {role}" if k == 0 else None)
            if task.chance is not None:
                ax.axhline(task.chance, color="grey", linestyle=":", linewidth=1)
        ax.set_title(f"{name} ({rows[0].tasks[k].metric})", fontsize=9)
        ax.set_xlabel("epoch", fontsize=8)
    if rows:
        fig.legend(loc="lower center", ncol=min(4, 2 * len(rows)), fontsize=7, frameon=False)
    fig.suptitle("Learning curves on the clean test split: clean (dashed) vs protected (solid); chance dotted",
                 fontsize=10)
    fig.tight_layout(rect=(0, 0.08 + 0.02 * (len(rows) // 2), 1, 0.95))
    fig.savefig(path)


def plot_learnability(result: VerificationResult, path: Path) -> None:
    """Bars: worst-seed learnability per no-defense profile × weighting, seeds as dots, the limit dashed."""
    groups = [g for g in result.groups() if g.in_verdict]
    fig = _new_figure(max(5, 0.9 * len(groups) + 2), 4)
    ax = fig.add_subplot()
    x = np.arange(len(groups))
    ax.bar(x, [np.nan if g.worst is None else g.worst for g in groups], color="C1", label="worst seed")
    for i, g in enumerate(groups):
        ax.plot([i] * len(g.rows), [np.nan if s is None else s for s in g.scores], "k.", markersize=6)
    ax.axhline(result.rules.max_learnability, color="black", linestyle="--", linewidth=1,
               label=f"limit {result.rules.max_learnability:g}")
    ax.axhline(0, color="grey", linewidth=0.8)
    ax.set_xticks(x)
    ax.set_xticklabels([f"{g.profile}\n{g.weighting}" for g in groups], fontsize=8)
    ax.set_ylabel("retained learnability")
    scores = [s for g in groups for s in g.scores if s is not None]
    ax.set_ylim(min([-0.1] + scores), max([1.05] + scores))
    ax.legend(fontsize=8, frameon=False)
    ax.set_title("Retained learnability, no defense (0 = nothing learned, 1 = as from clean data)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)


def plot_defense_heatmap(result: VerificationResult, path: Path) -> None:
    """Heat-map of learnability (first seed), profile/weighting × defense, values written in cells."""
    labels = list(dict.fromkeys(f"{r.profile}/{r.weighting}" for r in result.rows))
    defenses = list(dict.fromkeys(r.defense for r in result.rows))
    grid = np.full((len(labels), len(defenses)), np.nan)
    for g in result.groups():
        value = g.rows[0].learnability
        if value is not None:
            grid[labels.index(f"{g.profile}/{g.weighting}"), defenses.index(g.defense)] = value
    fig = _new_figure(max(4, 1.1 * len(defenses) + 2.5), max(3, 0.6 * len(labels) + 1.5))
    ax = fig.add_subplot()
    image = ax.imshow(np.ma.masked_invalid(grid), cmap="viridis", vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(len(defenses)))
    ax.set_xticklabels(defenses, rotation=30, ha="right")
    ax.set_yticks(range(len(labels)))
    ax.set_yticklabels(labels)
    for (i, j), value in np.ndenumerate(grid):
        ax.text(j, i, "–" if np.isnan(value) else f"{value:.2f}", ha="center", va="center",
                color="white" if np.isnan(value) or value < 0.6 else "black", fontsize=8)
    fig.colorbar(image, ax=ax, label="retained learnability")
    ax.set_title("Defenses: retained learnability (first seed)")
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
    figures = {"learning_curves": figure_dir / "learning_curves.png",
               "learnability": figure_dir / "learnability.png",
               "defense_heatmap": figure_dir / "defense_heatmap.png"}
    plot_learning_curves(result, figures["learning_curves"])
    plot_learnability(result, figures["learnability"])
    if any(r.defense != NO_DEFENSE for r in result.rows):
        plot_defense_heatmap(result, figures["defense_heatmap"])
    else:
        del figures["defense_heatmap"]
    if samples is not None:
        figures["samples"] = figure_dir / "samples.png"
        plot_samples(samples, figures["samples"])
    paths = {"json": out_dir / "report.json", "markdown": out_dir / "report.md"}
    write_json(paths["json"], result.to_json())
    relative = {name: str(path.relative_to(out_dir)) for name, path in figures.items()}
    write_text_atomic(str(paths["markdown"]), render_markdown(result, relative))
    return {**paths, **figures}
