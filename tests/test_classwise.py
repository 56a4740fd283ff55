"""Class-wise baselines LSP and AR: δ is a function of the label vector, fusion modes, budget, stores."""

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from mtlue.data import open_source
from mtlue.data.base import Batch, TaskSpec
from mtlue.protect import method_class
from mtlue.protect.ar import ARMethod
from mtlue.protect import protect_config
from mtlue.protect.base import ProtectContext
from mtlue.protect.classwise import fusion_grid_size
from mtlue.protect.driver import protect_source
from mtlue.protect.lsp import LSPMethod
from mtlue.store import verify_store

CPU = torch.device("cpu")
SPEC = "shapes:n=64,size=16"
METHODS = ("lsp", "ar")


@pytest.fixture(scope="module")
def source():
    return open_source(SPEC)


def prepared(source, tmp_path, **changes):
    if changes.get("method") == "ar":  # these tests check the class-wise table: one fixed AR sample per class
        changes.setdefault("fresh", False)
    config = protect_config({"method": "lsp", "batch_size": 32, **changes})
    method = method_class(config.method)(config)
    method.prepare(ProtectContext(source, config, CPU, tmp_path / f"work-{config.method}", progress=False))
    return method


def label_batch(source, rows: list, masks: list | None = None) -> Batch:
    """A Batch of zero images whose label vectors are `rows` (one value per task, in task order)."""
    count = len(rows)
    height, width, channels = source.image_shape
    labels = {t.name: np.asarray([r[k] for r in rows], dtype=np.int64) for k, t in enumerate(source.tasks)}
    mask_rows = masks or [[True] * len(source.tasks)] * count
    mask = {t.name: np.asarray([m[k] for m in mask_rows], dtype=bool) for k, t in enumerate(source.tasks)}
    return Batch(np.arange(count, dtype=np.int64), np.zeros((count, height, width, channels), np.uint8), labels, mask)


def test_registry_names_the_classwise_classes():
    assert method_class("lsp") is LSPMethod
    assert method_class("ar") is ARMethod


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("fusion", ("average", "patch"))
def test_delta_depends_only_on_the_label_vector(source, tmp_path, method, fusion):
    model = prepared(source, tmp_path, method=method, fusion=fusion, norm="l2")
    rows = [[1, 2, 0, 3, 1], [1, 2, 0, 3, 1], [2, 2, 0, 3, 1], [1, 2, 1, 3, 1], [1, 2, 0, 3, 0]]
    batch = label_batch(source, rows)
    batch.images[0] = 200  # the image content must not matter
    delta = model.perturb(batch, CPU)
    assert np.array_equal(delta[0], delta[1])
    for other in (2, 3, 4):  # one task's class changes -> δ changes
        assert np.abs(delta[other] - delta[0]).max() > 1e-4


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("norm", ("l2", "linf"))
def test_delta_has_the_batch_shape_and_stays_in_the_linf_ball(source, tmp_path, method, norm):
    model = prepared(source, tmp_path, method=method, norm=norm, epsilon=4.0)
    batch = next(source.batches("train", 32))
    delta = model.perturb(batch, CPU)
    assert delta.shape == batch.images.shape and delta.dtype == np.float32
    assert np.abs(delta).max() <= np.float32(4 / 255)
    if norm == "linf":  # scaled so the largest pixel sits exactly on ε
        assert np.allclose(np.abs(delta).reshape(len(delta), -1).max(1), 4 / 255, atol=1e-7)
    else:  # L2 target larger than the ball: measured L2 after clipping is recorded and below the target
        record = model.record()
        assert record["target_l2"] > record["measured_l2_mean"] > 0
        assert 0 < record["pixels_at_epsilon_fraction"] < 1


@pytest.mark.parametrize("tasks, side", [(1, 1), (2, 2), (4, 2), (5, 4), (16, 4), (17, 8), (40, 8)])
def test_patch_fusion_grid_side(tasks, side):
    assert fusion_grid_size(tasks) == side


def test_average_fusion_is_the_mean_of_the_task_patterns(source, tmp_path):
    model = prepared(source, tmp_path, method="ar", fusion="average")
    rows = [[0, 1, 1, 2, 0], [2, 0, 0, 1, 1]]
    batch = label_batch(source, rows)
    fused = model.table.fuse(batch.labels, batch.masks, "average", model.protected)
    for n, row in enumerate(rows):
        expected = np.mean([model.table.patterns[t.name][row[k]] for k, t in enumerate(source.tasks)], axis=0)
        np.testing.assert_allclose(fused[n], expected, atol=1e-6)


def test_patch_fusion_places_each_subsampled_task_pattern_in_its_cell(source, tmp_path):
    model = prepared(source, tmp_path, method="lsp", fusion="patch")
    rows = [[2, 1, 0, 3, 1]]
    batch = label_batch(source, rows)
    fused = model.table.fuse(batch.labels, batch.masks, "patch", model.protected)[0]
    side = 4  # five tasks
    cell = source.image_shape[0] // side
    for k, t in enumerate(source.tasks):
        r, c = divmod(k, side)
        expected = model.table.patterns[t.name][rows[0][k]][::side, ::side][:cell, :cell]
        np.testing.assert_array_equal(fused[r * cell:(r + 1) * cell, c * cell:(c + 1) * cell], expected)
    filled = np.zeros(fused.shape[:2], bool)
    filled[:2 * cell, :] = True  # cells 0..4 occupy row 0 and the first cell of row 1
    filled[cell:2 * cell, cell:] = False
    assert np.all(fused[~filled] == 0)


def test_missing_labels_add_nothing_and_unprotected_tasks_carry_no_label(source, tmp_path):
    model = prepared(source, tmp_path, method="lsp", norm="linf")
    none_present = label_batch(source, [[1, 1, 1, 1, 1]], masks=[[False] * 5])
    assert np.all(model.perturb(none_present, CPU) == 0)

    partial = prepared(source, tmp_path, method="ar", protect_tasks=("shape", "colour"))
    delta = partial.perturb(label_batch(source, [[1, 2, 0, 0, 0], [1, 2, 1, 3, 1], [0, 2, 1, 3, 1]]), CPU)
    assert np.array_equal(delta[0], delta[1])  # labels of unprotected tasks do not matter
    assert np.abs(delta[2] - delta[1]).max() > 1e-4  # a protected task's label does


def test_lsp_class_patterns_of_one_task_are_linearly_separable():
    lsp = LSPMethod(protect_config({"method": "lsp", "seed": 5}))
    table = lsp.build_patterns(TaskSpec("digit", "multiclass", 10), 0, (32, 32, 1))
    patterns = table.reshape(len(table), -1)
    classes = len(patterns)
    rng = np.random.default_rng(0)
    noise_scale = 0.3 / np.sqrt(patterns.shape[1])  # 30% of a unit pattern's per-pixel RMS

    def noisy(repeats):
        y = np.repeat(np.arange(classes), repeats)
        return patterns[y] + noise_scale * rng.standard_normal((len(y), patterns.shape[1])), y

    x_train, y_train = noisy(20)
    design = np.hstack([x_train, np.ones((len(x_train), 1))])
    weights = np.linalg.lstsq(design, np.eye(classes)[y_train], rcond=None)[0]
    x_test, y_test = noisy(50)
    predicted = (np.hstack([x_test, np.ones((len(x_test), 1))]) @ weights).argmax(1)
    assert (predicted == y_test).mean() == 1.0
    # and the patterns are blocky: constant over each 8×8 patch
    image = table[3]
    assert np.all(image[:8, :8] == image[0, 0])


def test_pattern_table_follows_the_seed(source, tmp_path):
    first = prepared(source, tmp_path / "a", method="ar", seed=3).record()["pattern_table_sha256"]
    again = prepared(source, tmp_path / "b", method="ar", seed=3).record()["pattern_table_sha256"]
    other = prepared(source, tmp_path / "c", method="ar", seed=4).record()["pattern_table_sha256"]
    assert first == again != other


@pytest.mark.parametrize("method, fusion", [("lsp", "average"), ("ar", "patch")])
def test_protected_store_verifies_and_records_the_method(source, tmp_path, method, fusion):
    from cli import main

    store = tmp_path / "S"
    config = protect_config(dict(method=method, fusion=fusion, norm="l2", batch_size=32))
    manifest = protect_source(source, store, config, CPU, progress=False)
    verify_store(store)
    result = CliRunner().invoke(main, ["inspect", str(store), "--verify"])
    assert result.exit_code == 0, result.output
    record = json.loads((store / "manifest.json").read_text())["protection"]
    assert record["method"] == method and record["fusion"] == fusion and record["norm"] == "l2"
    # the shared settings and the class-wise ones only: no surrogate, generator or PGD fields
    assert set(record["config"]) == {"method", "epsilon", "batch_size", "protect_tasks", "poison_rate", "seed",
                                     "fusion", "norm", "period"} | ({"fresh"} if method == "ar" else set())
    assert "surrogate" not in record and "base" not in record and "lambda_intra" not in record
    assert len(record["pattern_table_sha256"]) == 64
    assert record["measured_l2_mean"] <= record["target_l2"]
    assert manifest["splits"]["train"]["count"] == 64


def test_ar_draws_a_fresh_sample_of_the_class_process_per_image(source, tmp_path):
    """AR paper: each image gets its own sample of its class's process; the class filter predicts it."""
    from mtlue.protect.ar import BORDER, autoregressive_fields

    model = prepared(source, tmp_path, method="ar", fresh=True)
    rows = [[1, 2, 0, 3, 1]] * 3
    batch = label_batch(source, rows)
    batch.index[:] = [5, 6, 5]
    delta = model.perturb(batch, CPU)
    assert not np.allclose(delta[0], delta[1])  # same labels, other image: another sample
    assert np.array_equal(delta[0], delta[2])  # same image: the same bytes every time
    fixed = prepared(source, tmp_path / "fixed", method="ar", fresh=False)
    fixed_delta = fixed.perturb(batch, CPU)
    assert np.array_equal(fixed_delta[0], fixed_delta[1])  # --no-fresh: one pattern per label vector
    # the mechanism: a class's own causal filter leaves only the driving noise of its samples
    _, filters = model.filters["colour"]
    rng = np.random.default_rng(0)
    height, width, channels = source.image_shape
    noise = rng.standard_normal((1, channels, height + BORDER, width + BORDER))
    field = autoregressive_fields(filters[:1], height, width, None, noise)[0].transpose(2, 0, 1)

    def residual(coefficients):
        out = []
        for c in range(channels):
            window = np.lib.stride_tricks.sliding_window_view(field[c], (3, 3)).reshape(height - 2, width - 2, 9)
            out.append(window[..., 8] - (window[..., :8] * coefficients[c]).sum(-1))
        return float(np.var(out))
    assert residual(filters[0]) < 0.8 * residual(filters[1])
