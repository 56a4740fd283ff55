"""Rendering a verification: report.json, report.md, the CLI table and the PNG figures a user opens."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from mtlue.report import SampleGrid, amplify_perturbation, format_verdict_text, write_report
from mtlue.verdict import TaskScore, VerificationResult, VictimRow


def row(weighting, protected, defense="none", seed=0, profile="plain"):
    """Two classification tasks and an MAE task, clean victims well above chance."""
    tasks = [
        TaskScore("digit", "multiclass", "accuracy", chance=0.1, clean=0.9, protected_last=protected,
                  protected_peak=protected + 0.05, clean_curve=[0.5, 0.9], protected_curve=[protected + 0.05, protected]),
        TaskScore("smile", "binary", "balanced_accuracy", chance=0.5, clean=0.8, protected_last=0.5,
                  protected_peak=0.55, clean_curve=[0.7, 0.8], protected_curve=[0.55, 0.5]),
        TaskScore("age", "regression", "mae", chance=10.0, clean=4.0, protected_last=9.5, protected_peak=9.0,
                  clean_curve=[6.0, 4.0], protected_curve=[9.0, 9.5]),
    ]
    return VictimRow(profile, weighting, defense, seed, 0, tasks)


def result(rows=None):
    rows = rows or [row("ew", 0.15), row("ew", 0.2, seed=1), row("uw", 0.12), row("ew", 0.85, defense="jpeg10")]
    return VerificationResult(rows, dataset="digits", method="mtlue + em", surrogate_backbone="small_cnn",
                              profiles={"plain": "small_cnn, adam lr 0.001"},
                              grid={"profiles": [{"name": "plain", "weightings": ["ew", "uw"],
                                                  "victim": {"augment": "none", "optimizer": "adam",
                                                             "backbone": "small_cnn", "epochs": 3}}],
                                    "seeds": [0, 1], "defenses": ["none", "jpeg10"], "defense_profiles": ["plain"],
                                    "defense_weightings": ["ew"]},
                              notes={"seed": np.int64(0), "nan": float("nan")})


def test_report_files_are_written_and_figures_open(tmp_path):
    rng = np.random.default_rng(0)
    clean = rng.integers(0, 256, size=(4, 16, 16, 3), dtype=np.uint8)
    protected = np.clip(clean.astype(int) + rng.integers(-8, 9, size=clean.shape), 0, 255).astype(np.uint8)
    paths = write_report(result(), tmp_path / "report", SampleGrid(clean, protected, 8 / 255, indices=[0, 1, 2, 3]))
    for name in ("json", "markdown", "learning_curves", "learnability", "defense_heatmap", "samples"):
        assert paths[name].exists() and paths[name].stat().st_size > 0, name
    for name in ("learning_curves", "learnability", "defense_heatmap", "samples"):
        with Image.open(paths[name]) as image:
            assert image.format == "PNG" and image.size[0] > 100
    report = json.loads(paths["json"].read_text())
    assert report["schema"] == "mtlue-report/2" and report["verdict"] == "PASS"
    assert report["notes"] == {"seed": 0, "nan": None}
    ew = next(g for g in report["groups"] if g["weighting"] == "ew" and g["defense"] == "none")
    assert ew["seeds"] == [0, 1] and ew["worst"] == pytest.approx(max(ew["learnability"]))
    jpeg = next(g for g in report["groups"] if g["defense"] == "jpeg10")
    assert jpeg["holds"] is False and jpeg["in_verdict"] is False
    first = report["rows"][0]["tasks"][0]
    assert first["clean"] == 0.9 and first["chance"] == 0.1 and "learnability" in first
    markdown = paths["markdown"].read_text()
    assert "**Verdict: PASS**" in markdown and "jpeg10" in markdown and "## Not run" in markdown
    assert "figures/learning_curves.png" in markdown and "chosen on the test data" in markdown
    assert "| plain | ew | none | 0 | age | mae | 10 | 4 | 9.5 | 9 |" in markdown
    assert "Reproducibility" in markdown


def test_cli_text_has_the_score_table_what_was_not_run_and_the_verdict():
    text = format_verdict_text(result())
    lines = text.splitlines()
    assert lines[0].split()[:3] == ["profile", "weighting", "defense"]
    assert any(line.startswith("plain") and "jpeg10" in line and "FAIL" in line for line in lines)
    assert "not run:" in text and "rlw" in text and "verdict: PASS" in lines[-1]


def test_a_report_without_a_judgeable_row_is_written_with_the_reason(tmp_path):
    paths = write_report(result([row("ew", 0.9, defense="jpeg10")]), tmp_path)
    report = json.loads(paths["json"].read_text())
    assert report["verdict"] is None and "no victim trained without a defense" in report["verdict_reason"]
    assert "Verdict: none" in paths["markdown"].read_text()


def test_perturbation_is_amplified_around_128():
    clean = np.full((1, 2, 2, 1), 100, np.uint8)
    protected = np.array([100, 108, 92, 104], np.uint8).reshape(1, 2, 2, 1)
    shown = amplify_perturbation(clean, protected, 8 / 255).flatten().tolist()
    assert shown == [128, 255, 1, 192]  # +ε -> 255, −ε -> 1, ε/2 -> 128 + 63.5
