"""The learnability verdict: what a reviewer relies on when a report says PASS, FAIL or INCONCLUSIVE."""

from __future__ import annotations

import numpy as np
import pytest

from mtlue.data.base import TaskSpec
from mtlue.errors import ConfigError
from mtlue.metrics import chance_values, primary_metric, task_metrics
from mtlue.verdict import TaskScore, VerdictRules, VerificationResult, VictimRow, judge

MULTI = TaskSpec("digit", "multiclass", 10)
SMILE = TaskSpec("smile", "binary", 2)


def score(task, chance, clean, protected, metric=None):
    metric = metric or primary_metric(task)
    return TaskScore(task.name, task.kind, metric, chance=chance, clean=clean, protected_last=protected,
                     clean_curve=[clean], protected_curve=[protected])


def row(profile="plain", weighting="ew", seed=0, defense="none", tasks=None):
    return VictimRow(profile, weighting, defense, seed, 0, tasks or [score(MULTI, 0.1, 0.9, 0.2)])


def test_majority_predictions_on_an_imbalanced_binary_task_score_zero():
    """90% positives: predicting 'positive' for every image is 90% accurate and has learned nothing."""
    rng = np.random.default_rng(0)
    train = (rng.random(1000) < 0.9).astype(np.int64)
    test = (rng.random(500) < 0.9).astype(np.int64)
    majority = np.ones_like(test)
    learned = test.copy()
    learned[:25] = 1 - learned[:25]  # a real classifier with a few mistakes
    metric = primary_metric(SMILE)
    assert metric == "balanced_accuracy"
    chance = chance_values(SMILE, train, test)[metric]
    assert chance == 0.5 and chance_values(SMILE, train, test)["accuracy"] > 0.85
    protected = task_metrics(SMILE, test, majority)
    clean = task_metrics(SMILE, test, learned)
    assert protected["accuracy"] > 0.85  # plain accuracy would call this learned
    task = score(SMILE, chance, clean[metric], protected[metric])
    assert task.learnability == pytest.approx(0.0)
    rows = [row(tasks=[task])]
    assert judge(rows, VerdictRules()).outcome == "PASS"
    teaches = score(SMILE, chance, clean[metric], clean[metric])
    assert teaches.learnability == pytest.approx(1.0)
    assert judge([row(tasks=[teaches])], VerdictRules()).outcome == "FAIL"


def test_plain_accuracy_is_refused_as_the_binary_metric():
    with pytest.raises(ConfigError, match="accuracy"):
        VerdictRules(binary_metric="accuracy")
    assert primary_metric(SMILE, "auc") == "auc" and primary_metric(MULTI, "auc") == "accuracy"


def test_learnability_is_signed_and_mae_counts_the_error_removed():
    below = score(MULTI, 0.1, 0.9, 0.05)
    assert below.learnability == pytest.approx(-0.05 / 0.8)
    age = TaskSpec("age", "regression", 1)
    mae = score(age, chance=10.0, clean=4.0, protected=9.0)
    assert mae.metric == "mae" and mae.clean_gain == pytest.approx(0.6) and mae.learnability == pytest.approx(1 / 6)


def test_a_row_weights_its_tasks_by_what_clean_data_teaches():
    barely = score(TaskSpec("hard", "multiclass", 10), 0.1, 0.12, 0.12)  # learnability 1, gain 0.02
    strong = score(MULTI, 0.1, 0.9, 0.1)  # learnability 0, gain 0.8
    victim = row(tasks=[barely, strong])
    assert victim.learnability == pytest.approx(0.02 / 0.82)
    unlearnt = score(TaskSpec("noise", "multiclass", 10), 0.1, 0.08, 0.3)  # clean below chance: no weight
    assert unlearnt.learnability is None and unlearnt.weight == 0
    assert row(tasks=[strong, unlearnt]).learnability == pytest.approx(0.0)


def test_clean_victims_at_chance_make_the_verdict_inconclusive():
    at_chance = [row(tasks=[score(MULTI, 0.1, 0.11, 0.1)]), row(weighting="uw")]
    outcome = judge(at_chance, VerdictRules())
    assert outcome.outcome == "INCONCLUSIVE" and "plain/ew" in outcome.reason
    assert judge(at_chance, VerdictRules(min_clean_gain=0.0)).outcome == "PASS"


def test_the_worst_seed_decides_and_the_limit_is_inclusive():
    rows = [row(tasks=[score(MULTI, 0.1, 0.9, 0.2)]), row(seed=1, tasks=[score(MULTI, 0.1, 0.9, 0.5)])]
    assert judge(rows[:1], VerdictRules()).outcome == "PASS"
    outcome = judge(rows, VerdictRules())
    assert outcome.outcome == "FAIL" and "plain/ew" in outcome.reason
    assert judge(rows, VerdictRules(max_learnability=0.5)).outcome == "PASS"  # at the limit passes
    groups = VerificationResult(rows).groups()
    assert len(groups) == 1 and groups[0].worst == pytest.approx(0.5) and groups[0].best == pytest.approx(0.125)


def test_defense_rows_are_reported_but_never_change_the_verdict():
    broken = row(defense="jpeg10", tasks=[score(MULTI, 0.1, 0.9, 0.9)])
    assert judge([row(), broken], VerdictRules()).outcome == "PASS"
    with pytest.raises(ConfigError, match="no victim trained without a defense"):
        judge([broken], VerdictRules())


def test_every_profile_counts_an_ordinary_attacker_that_learns_fails_the_release():
    rows = [row(), row(profile="sgd", tasks=[score(MULTI, 0.1, 0.9, 0.8)])]
    outcome = judge(rows, VerdictRules())
    assert outcome.outcome == "FAIL" and "sgd/ew" in outcome.reason


def test_report_json_round_trips_and_names_what_was_not_run():
    grid = {"profiles": [{"name": "plain", "weightings": ["ew", "uw"],
                          "victim": {"augment": "none", "optimizer": "adam", "backbone": "small_cnn", "epochs": 8}}],
            "seeds": [0], "defenses": ["none"], "defense_profiles": ["plain"], "defense_weightings": None}
    result = VerificationResult([row(), row(weighting="uw")], grid=grid, surrogate_backbone="small_cnn")
    not_run = "\n".join(result.not_run())
    for expected in ("rlw", "aligned_mtl", "fairgrad", "stl", "standard augmentation", "SGD",
                     "other than the surrogate's (small_cnn)", "one victim seed", "defense jpeg10: not run"):
        assert expected in not_run, expected
    again = VerificationResult.from_json(result.to_json())
    assert again.verdict() == result.verdict() and again.not_run() == result.not_run()
    with pytest.raises(ConfigError, match="schema"):
        VerificationResult.from_json({**result.to_json(), "schema": "mtlue-report/1"})
