"""Victim training: every weighting learns, STL, masked labels, determinism, checkpoints, CLI."""

import json

import pytest
import torch
from click.testing import CliRunner

from mtlue.data import open_source
from mtlue.errors import ConfigError
from mtlue.models import load_checkpoint
from mtlue.train import TrainConfig, evaluate, train_model
from mtlue.weighting import WEIGHTINGS

SPEC = "shapes:n=240,size=16"
FAST = ("ew", "aligned_mtl")



@pytest.fixture(scope="module")
def shapes():
    return open_source(SPEC)


def _config(**kwargs):
    defaults = dict(backbone="small_cnn", epochs=2, batch_size=24, lr=3e-3)
    defaults.update(kwargs)
    return TrainConfig(**defaults)


def _train(source, train_set=None, **kwargs):
    config = _config(**{k: v for k, v in kwargs.items() if k not in ("out_dir", "defense")})
    return train_model(config, train_set or source.dataset("train"), source.dataset("test"), source.tasks, "cpu",
                       out_dir=kwargs.get("out_dir"), defense=kwargs.get("defense"), progress=False)


@pytest.mark.parametrize("name", [w if w in FAST else pytest.param(w, marks=pytest.mark.slow) for w in WEIGHTINGS])
def test_each_weighting_beats_the_majority_floor(shapes, name):
    history = _train(shapes, weighting=name).history
    assert len(history["epochs"]) == 2
    assert history["mean"]["last"] > history["mean"]["floor"] + 0.05, history["last"]


def test_representation_gradients_also_learn(shapes):
    history = _train(shapes, weighting="mgda", grad_space="representation").history
    assert history["mean"]["last"] > history["mean"]["floor"] + 0.05


def test_stl_trains_one_net_per_task_and_refuses_weightings(shapes):
    result = _train(shapes, stl=True, epochs=1)
    assert len(result.model.nets) == len(shapes.tasks)
    assert result.history["mean"]["last"] > result.history["mean"]["floor"]
    with pytest.raises(ConfigError, match="stl"):
        _config(stl=True, weighting="uw")


class RelabelledSubset(torch.utils.data.Dataset):
    """First `n` train items; task `task` is unlabelled (mask False) on odd positions, where its label is `fill`."""

    def __init__(self, dataset, n, task, fill):
        self.dataset, self.n, self.task, self.fill = dataset, n, task, fill

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        item = self.dataset[i]
        if i % 2:
            item["labels"][self.task] = torch.as_tensor(self.fill, dtype=item["labels"][self.task].dtype)
            item["masks"][self.task] = torch.as_tensor(False)
        return item


def test_missing_labels_change_nothing_whatever_they_hold(shapes):
    runs = [_train(shapes, RelabelledSubset(shapes.dataset("train"), 96, "colour", fill), epochs=1) for fill in (0, 3)]
    for a, b in zip(runs[0].model.state_dict().values(), runs[1].model.state_dict().values()):
        torch.testing.assert_close(a, b)


def test_same_seed_gives_same_weights_and_another_seed_does_not(shapes):
    subset = torch.utils.data.Subset(shapes.dataset("train"), range(96))
    first, again, other = (_train(shapes, subset, epochs=1, weighting="rlw", seed=s).model for s in (3, 3, 4))
    for a, b in zip(first.state_dict().values(), again.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert any(not torch.equal(a, b) for a, b in zip(first.state_dict().values(), other.state_dict().values()))


def test_run_directory_holds_metrics_model_and_periodic_checkpoints(shapes, tmp_path):
    subset = torch.utils.data.Subset(shapes.dataset("train"), range(96))
    _train(shapes, subset, epochs=2, checkpoint_every=1, out_dir=tmp_path)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["epoch_1.pt", "epoch_2.pt"]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert {"floor", "peak", "last", "mean", "epochs", "config"} <= set(metrics)
    assert set(metrics["epochs"][0]["test"]["large"]) == {"accuracy", "balanced_accuracy", "auc"}
    model, meta = load_checkpoint(tmp_path / "model.pt")
    assert meta["epoch"] == 2
    loader = torch.utils.data.DataLoader(shapes.dataset("test"), batch_size=64)
    reloaded, _ = evaluate(model, loader, shapes.tasks, torch.device("cpu"))
    for task in shapes.tasks:
        assert reloaded[task.name]["accuracy"] == metrics["epochs"][-1]["test"][task.name]["accuracy"]


def test_defense_hook_sees_unit_range_images_and_weights_label_sets(shapes):
    subset = torch.utils.data.Subset(shapes.dataset("train"), range(48))
    seen = []

    def halves(images, labels, masks, model):
        seen.append((float(images.min()), float(images.max()), model.training))
        return images, [(0.5, labels), (0.5, labels)]

    defended = _train(shapes, subset, epochs=1, defense=halves).model
    plain = _train(shapes, subset, epochs=1).model
    assert seen and all(0.0 <= lo and hi <= 1.0 and training for lo, hi, training in seen)
    for a, b in zip(defended.state_dict().values(), plain.state_dict().values()):
        torch.testing.assert_close(a, b)


def test_cli_train_prints_table_and_writes_run(tmp_path):
    from cli import main

    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["train", "shapes:n=96,size=16", "--backbone", "small_cnn", "--epochs", "1",
                                       "--batch-size", "32", "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    assert "striped" in result.output and "chance" in result.output and "mean" in result.output
    assert (out / "metrics.json").exists() and (out / "model.pt").exists()


def test_cli_train_names_the_task_missing_from_the_test_source(tmp_path):
    from cli import main

    result = CliRunner().invoke(main, ["train", "shapes:n=96,size=16", "--test", "digits", "--backbone", "small_cnn",
                                       "--epochs", "1", "--out", str(tmp_path / "run")])
    assert result.exit_code == 1
    assert "'shape'" in result.output
