"""The verdict rule, report files and figures a user reads after verification."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from mtlue.errors import ConfigError
from mtlue.report import (SampleGrid, TaskMetric, VerificationResult, VictimRow, amplify_perturbation,
                          format_verdict_text, verdict, write_report)


def row(weighting, protected, defense="none", floor=(60.0, 50.0), clean=(95.0, 90.0)):
    """A two-accuracy-task row (+ one MAE task that never enters the means)."""
    tasks = [TaskMetric(f"task{i}", "binary", "accuracy", clean=c, protected_peak=p + 5, protected_last=p, floor=f)
             for i, (c, p, f) in enumerate(zip(clean, protected, floor))]
    tasks.append(TaskMetric("age", "regression", "mae", clean=4.0, protected_peak=9.0, protected_last=11.0))
    return VictimRow(weighting, defense, tasks)


def protected_rows():
    # floor mean 55: limit 65 with the default margin
    return [row("ew", (62.0, 58.0)), row("uw", (70.0, 50.0)), row("rlw", (64.0, 55.0))]


def test_verdict_passes_when_every_weighting_is_at_or_below_floor_plus_margin():
    rows = protected_rows()
    assert rows[1].protected_last_mean == pytest.approx(60.0) and rows[1].floor_mean == pytest.approx(55.0)
    assert verdict(rows, margin=10.0) == "PASS"
    assert verdict([row("ew", (65.0, 65.0))], margin=10.0) == "PASS"  # "at or below" the limit


def test_one_weighting_above_the_limit_fails_the_verdict():
    rows = protected_rows() + [row("fairgrad", (80.0, 70.0))]
    assert verdict(rows, margin=10.0) == "FAIL"
    assert verdict(rows, margin=25.0) == "PASS"


def test_defense_rows_are_reported_but_never_flip_the_verdict():
    broken = row("ew", (90.0, 88.0), defense="jpeg10")
    assert broken.holds(10.0) is False
    assert verdict(protected_rows() + [broken], margin=10.0) == "PASS"
    assert verdict([row("ew", (90.0, 88.0))] + [row("ew", (50.0, 50.0), defense="at")]) == "FAIL"
    result = VerificationResult(protected_rows() + [broken], margin=10.0)
    text = format_verdict_text(result)
    assert "jpeg10" in text and "FAIL" in text and "verdict: PASS" in text


def test_verdict_needs_a_no_defense_row_with_an_accuracy_task():
    with pytest.raises(ConfigError, match="verdict"):
        verdict([row("ew", (50.0, 50.0), defense="mixup")])


def test_report_files_are_written_and_figures_open(tmp_path):
    rows = protected_rows() + [row("ew", (85.0, 80.0), defense="jpeg10"), row("uw", (61.0, 57.0), defense="bdr2")]
    result = VerificationResult(rows, margin=10.0, dataset="digits", method="mtlue-em", backbone="small_cnn", epochs=3,
                                notes={"seed": np.int64(0), "nan": float("nan")})
    rng = np.random.default_rng(0)
    clean = rng.integers(0, 256, size=(4, 16, 16, 3), dtype=np.uint8)
    delta = rng.integers(-8, 9, size=clean.shape)
    protected = np.clip(clean.astype(int) + delta, 0, 255).astype(np.uint8)
    paths = write_report(result, tmp_path / "report", SampleGrid(clean, protected, 8 / 255, indices=[0, 1, 2, 3]))
    for name in ("json", "markdown", "clean_vs_protected", "per_task", "defense_heatmap", "samples"):
        assert paths[name].exists() and paths[name].stat().st_size > 0, name
    for name in ("clean_vs_protected", "per_task", "defense_heatmap", "samples"):
        with Image.open(paths[name]) as image:
            assert image.format == "PNG" and image.size[0] > 100
    report = json.loads(paths["json"].read_text())
    assert report["verdict"] == "PASS" and report["margin"] == 10.0
    assert report["clean_reference"]["ew"] == pytest.approx(92.5)
    jpeg_row = next(r for r in report["rows"] if r["defense"] == "jpeg10")
    assert jpeg_row["holds"] is False and jpeg_row["in_verdict"] is False
    assert report["notes"] == {"seed": 0, "nan": None}
    assert VerificationResult.from_json(report).verdict() == "PASS"
    markdown = paths["markdown"].read_text()
    assert "**Verdict: PASS**" in markdown and "jpeg10" in markdown
    assert "figures/defense_heatmap.png" in markdown and "| ew | none | age | regression | mae |" in markdown


def test_perturbation_is_amplified_around_128():
    clean = np.full((1, 2, 2, 1), 100, np.uint8)
    protected = np.array([100, 108, 92, 104], np.uint8).reshape(1, 2, 2, 1)
    shown = amplify_perturbation(clean, protected, 8 / 255).flatten().tolist()
    assert shown == [128, 255, 1, 192]  # +ε -> 255, −ε -> 1, ε/2 -> 128 + 63.5


def test_metric_fractions_become_percent_and_fractions_are_refused_by_the_verdict():
    metric = TaskMetric.from_fractions("even", "binary", "accuracy", clean=0.95, protected_peak=0.61,
                                       protected_last=float("nan"), floor=0.5)
    assert (metric.clean, metric.protected_peak, metric.protected_last, metric.floor) == (95.0, 61.0, None, 50.0)
    assert TaskMetric.from_fractions("age", "regression", "mae", clean=4.5).clean == 4.5
    as_fractions = VictimRow("ew", "none", [TaskMetric("even", "binary", "accuracy", 0.95, 0.6, 0.55, 0.5)])
    with pytest.raises(ConfigError, match="percent"):
        verdict([as_fractions])


def test_a_report_without_a_judgeable_row_is_written_with_the_reason(tmp_path):
    result = VerificationResult([row("ew", (90.0, 88.0), defense="jpeg10")])
    paths = write_report(result, tmp_path)
    report = json.loads(paths["json"].read_text())
    assert report["verdict"] is None and "no weighting trained without defense" in report["verdict_error"]
    assert "Verdict: none" in paths["markdown"].read_text()
