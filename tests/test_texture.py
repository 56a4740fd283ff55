"""texture (class-wise stationary tiles, interleave fusion) and the release diagnostics."""

import numpy as np
import pytest
import torch

from mtlue.data import open_source
from mtlue.data.base import Batch
from mtlue.diagnostics import budget_stored, diagnose, intra_class_variance, shortcut_presence
from mtlue.errors import ConfigError
from mtlue.protect import method_class, protect_config
from mtlue.protect.base import ProtectContext
from mtlue.protect.config import SurrogateConfig
from mtlue.protect.driver import protect_source

CPU = torch.device("cpu")
SPEC = "shapes:n=96,size=16"


@pytest.fixture(scope="module")
def source():
    return open_source(SPEC)


def prepared(source, tmp_path, **changes):
    config = protect_config({"method": "texture", "batch_size": 32, **changes})
    method = method_class(config.method)(config)
    method.prepare(ProtectContext(source, config, CPU, tmp_path / "work", progress=False))
    return method


def label_batch(source, rows: list) -> Batch:
    count = len(rows)
    height, width, channels = source.image_shape
    labels = {t.name: np.asarray([r[k] for r in rows], dtype=np.int64) for k, t in enumerate(source.tasks)}
    masks = {t.name: np.ones(count, bool) for t in source.tasks}
    return Batch(np.arange(count, dtype=np.int64), np.zeros((count, height, width, channels), np.uint8), labels, masks)


def test_every_pixel_moves_by_the_full_budget_and_each_task_owns_a_share(source, tmp_path):
    method = prepared(source, tmp_path)
    delta = method.perturb(label_batch(source, [[0, 1, 0, 2, 1], [2, 3, 1, 0, 0]]), CPU)
    assert np.allclose(np.abs(delta), 8 / 255)  # interleave: no task is diluted to 1/K of ε
    owned = method.record()["interleave_pixels"]
    assert set(owned) == {t.name for t in source.tasks}
    assert max(owned.values()) - min(owned.values()) <= 16 * 16 // 64 + 1  # a balanced share of the 8x8 tile


def test_pattern_repeats_every_period_so_a_shift_keeps_it(source, tmp_path):
    method = prepared(source, tmp_path, period=4)
    delta = method.perturb(label_batch(source, [[1, 2, 0, 3, 1]]), CPU)[0]
    assert np.array_equal(delta[4:], delta[:-4]) and np.array_equal(delta[:, 4:], delta[:, :-4])


def test_a_task_label_changes_delta_only_on_that_tasks_pixels(source, tmp_path):
    method = prepared(source, tmp_path)
    delta = method.perturb(label_batch(source, [[0, 1, 0, 2, 1], [1, 1, 0, 2, 1]]), CPU)
    changed = np.any(delta[0] != delta[1], axis=-1)
    shape_index = [t.name for t in source.tasks].index("shape")
    assert changed.any() and np.all(method.owner[changed] == shape_index)


def test_an_unprotected_task_gets_no_pixels(source, tmp_path):
    method = prepared(source, tmp_path, protect_tasks=("shape", "colour"))
    assert set(np.unique(method.owner)) == {0, 1}


def test_interleave_is_refused_for_a_bad_period():
    with pytest.raises(ConfigError, match="--period 0"):
        protect_config({"method": "texture", "period": 0})


def test_diagnostics_see_the_shortcut_of_a_texture_store_and_none_in_a_clean_copy(source, tmp_path):
    protect_source(source, tmp_path / "store", protect_config({"method": "texture", "batch_size": 32}), CPU,
                   progress=False)
    protected = open_source(str(tmp_path / "store"))
    report = diagnose(protected, source, 8.0, speed=False)
    assert report["budget_stored"]["mean_abs_over_epsilon"] > 0.8  # shapes has few pixels near 0 or 255
    # δ alone tells every task's label well above chance: a class-wise pattern per task
    assert min(report["shortcut_presence"].values()) > 0.5
    images = np.stack([source.get("train", i).image for i in range(source.size("train"))])
    labels = {t.name: source.label_array("train", t.name)[0] for t in source.tasks}
    masks = {t.name: np.ones(len(images), bool) for t in source.tasks}
    noise = np.random.default_rng(0).choice([-8.0, 8.0], size=images.shape).astype(np.float32)
    assert max(shortcut_presence(noise, labels, masks, source.tasks).values()) < 0.5  # random δ: no shortcut
    assert min(intra_class_variance(noise, labels, masks, source.tasks).values()) > 0.8


def test_budget_stored_counts_clipping_at_the_bounds():
    clean = np.array([[0, 128, 255, 4]], dtype=np.uint8).reshape(1, 1, 4, 1)
    stored = np.array([[0, 136, 255, 12]], dtype=np.uint8).reshape(1, 1, 4, 1)
    found = budget_stored(stored.astype(np.float32) - clean, clean, 8.0)
    assert found["cut_share"] == 0.5 and found["cut_at_clip_share"] == 0.5


def test_an_em_loop_reports_whether_its_stop_rule_or_its_cap_ended_it(source, tmp_path, capsys):
    from mtlue.protect.base import stop_report

    assert stop_report([{"poisoned_train_error": 0.4, "stop": False}, {"poisoned_train_error": 0.005, "stop": True}],
                       8) == {"stopped_by": "stop_rule", "poisoned_error_curve": [0.4, 0.005]}
    assert stop_report([{"poisoned_train_error": 0.4, "stop": False}], 1)["stopped_by"] == "cap"
    config = protect_config({"method": "em", "epochs": 1, "steps": 2, "surrogate_steps": 2, "batch_size": 32})
    manifest = protect_source(source, tmp_path / "em", config, CPU, progress=True)
    record = manifest["protection"]
    assert len(record["poisoned_error_curve"]) == 1 and record["stopped_by"] in ("cap", "stop_rule")
    out = capsys.readouterr().out
    assert "em round 1/1: poisoned-train error" in out
    assert ("stopped at the cap of 1 rounds" in out) == (record["stopped_by"] == "cap")  # said, never silent


def test_tap_records_its_clean_surrogate_scores_and_warns_about_tasks_it_did_not_learn(source, tmp_path, capsys):
    config = protect_config({"method": "tap", "steps": 2, "batch_size": 32,
                             "surrogate": SurrogateConfig(backbone="small_cnn", epochs=1, batch_size=32)})
    record = protect_source(source, tmp_path / "tap", config, CPU, progress=False)["protection"]["surrogate"]
    assert set(record["clean_test_scores"]) == {t.name for t in source.tasks}
    for name, found in record["clean_test_scores"].items():
        assert found["gain"] == pytest.approx((found["score"] - found["chance"]) / (1 - found["chance"]))
    near = record["near_chance_tasks"]
    assert (f"learned {', '.join(near)} barely above chance" in capsys.readouterr().out) == bool(near)
