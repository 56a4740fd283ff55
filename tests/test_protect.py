"""`mtlue protect`: stored bytes, budget checks, poison rate, partial protection, resume, registry, CLI."""

import dataclasses
import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from mtlue.data import open_source
from mtlue.errors import ConfigError, ProtectionError
from mtlue.models.generator import load_generator
from mtlue.protect import METHODS, Registered, method_class
from mtlue.protect import protect_config
from mtlue.protect.base import ProtectionMethod
from mtlue.protect.config import MTLUEConfig, SurrogateConfig
from mtlue.protect.driver import apply_perturbation, protect_source
from mtlue.protect.mtlue_method import MTLUEMethod

CPU = torch.device("cpu")
SPEC = "shapes:n=48,size=16,seed=3"



@pytest.fixture(scope="module")
def source():
    return open_source(SPEC)


def tiny_config(**changes):
    base = dict(method="mtlue", base="em", epochs=2, batch_size=16, generator_width=8, seed=1,
                surrogate=SurrogateConfig(backbone="small_cnn"), samples_per_epoch=32)
    return protect_config({**base, **changes}, explicit=changes)  # base keys the method does not read: dropped


def stored_images(store: Path) -> tuple[np.ndarray, np.ndarray]:
    images, index = [], []
    for shard in sorted((store / "train").glob("shard-*.h5")):
        with h5py.File(shard, "r") as f:
            images.append(f["images"][:])
            index.append(f["index"][:])
    return np.concatenate(images), np.concatenate(index)


def clean_images(source) -> tuple[np.ndarray, np.ndarray]:
    batches = list(source.batches("train", 1024))
    return np.concatenate([b.images for b in batches]), np.concatenate([b.index for b in batches])


def test_stored_bytes_follow_the_apply_rule_and_stay_within_epsilon(tmp_path, source):
    store = tmp_path / "P"
    manifest = protect_source(source, store, tiny_config(), CPU, progress=False, shard_size=20)
    images, index = stored_images(store)
    clean, clean_index = clean_images(source)
    assert np.array_equal(index, clean_index)
    assert np.abs(images.astype(int) - clean.astype(int)).max() <= 8
    assert (images != clean).mean() > 0.3  # δ is really applied

    generator, _ = load_generator(tmp_path / "P.work" / "generator.pt", CPU)
    generator.eval()
    batch = next(source.batches("train", 1024))
    x = torch.from_numpy(batch.images).permute(0, 3, 1, 2).float() / 255
    labels = {k: torch.as_tensor(v) for k, v in batch.labels.items()}
    masks = {k: torch.as_tensor(v) for k, v in batch.masks.items()}
    with torch.no_grad():
        delta = generator(x, labels, masks).permute(0, 2, 3, 1).numpy()
    expected = np.rint(np.clip(batch.images.astype(np.float64) + delta.astype(np.float64) * 255, 0, 255)).astype(np.uint8)
    assert np.array_equal(images, expected)

    record = manifest["protection"]
    assert json.loads((store / "manifest.json").read_text())["protection"] == record
    assert record["method"] == "mtlue" and record["base"] == "em" and record["epsilon"] == 8.0
    assert record["lambda_intra"] == 20.0 and record["lambda_inter"] == 100.0
    assert len(record["generator_sha256"]) == 64 and record["poisoned_indices"] == "all"
    settings = {f.name for f in dataclasses.fields(MTLUEConfig)}
    assert set(record["config"]) == {"method", "epsilon", "batch_size", "protect_tasks", "poison_rate", "seed",
                                     "surrogate"} | settings  # the method's fields, none of another method's
    assert "round(clip(x*255 + delta*255, 0, 255))" in record["apply_rule"]
    assert not any(p.suffix == ".pt" for p in store.rglob("*"))  # checkpoints stay in the work dir


def test_apply_rule_rounds_and_clips():
    images = np.array([[[[0], [255], [100], [100]]]], dtype=np.uint8)
    delta = np.array([[[[-8], [8], [2.25], [-0.49]]]], dtype=np.float32) / 255
    assert apply_perturbation(images, delta).ravel().tolist() == [0, 255, 102, 100]


class FixedDelta(ProtectionMethod):
    """A method returning a constant δ (tests of the driver's checks)."""

    name = "fixed"

    def __init__(self, config, value):
        super().__init__(config)
        self.value = value

    def perturb(self, batch, device):
        return np.full(batch.images.shape, self.value, dtype=np.float32)


@pytest.mark.parametrize("value", [float("nan"), 9 / 255])
def test_nan_or_over_budget_delta_aborts_and_leaves_no_store(tmp_path, source, value):
    store = tmp_path / "P"
    with pytest.raises(ProtectionError, match="nothing was written"):
        protect_source(source, store, tiny_config(), CPU, progress=False, method=FixedDelta(tiny_config(), value))
    assert not store.exists()


def test_poison_rate_perturbs_a_seeded_subset_and_records_it(tmp_path, source):
    config = tiny_config(poison_rate=0.25)
    manifest = protect_source(source, tmp_path / "P", config, CPU, progress=False,
                              method=FixedDelta(config, 4 / 255))
    images, index = stored_images(tmp_path / "P")
    clean, _ = clean_images(source)
    poisoned = manifest["protection"]["poisoned_indices"]
    assert len(poisoned) == round(0.25 * len(index))
    changed = index[(images != clean).reshape(len(images), -1).any(1)]
    assert set(changed.tolist()) <= set(poisoned) and len(changed) >= len(poisoned) - 1  # white pixels may saturate
    again = protect_source(source, tmp_path / "Q", config, CPU, progress=False, method=FixedDelta(config, 4 / 255))
    assert again["protection"]["poisoned_indices"] == poisoned


def test_partial_protection_makes_delta_independent_of_unprotected_labels(tmp_path, source):
    config = tiny_config(protect_tasks=("shape",), epochs=1)
    method = MTLUEMethod(config)
    protect_source(source, tmp_path / "P", config, CPU, progress=False, method=method)
    batch = next(source.batches("train", 16))
    other = source.tasks[1]
    relabelled = type(batch)(batch.index, batch.images, dict(batch.labels), batch.masks)
    relabelled.labels[other.name] = (batch.labels[other.name] + 1) % other.num_classes
    assert np.array_equal(method.perturb(batch, CPU), method.perturb(relabelled, CPU))
    shifted = type(batch)(batch.index, batch.images, dict(batch.labels), batch.masks)
    shifted.labels["shape"] = (batch.labels["shape"] + 1) % source.task("shape").num_classes
    assert not np.array_equal(method.perturb(batch, CPU), method.perturb(shifted, CPU))


class Killed(Exception):
    pass


def _kill_after(k):
    def on_iteration(iteration):
        if iteration == k:
            raise Killed(f"killed after outer iteration {k}")
    return on_iteration


class KilledWhileWriting(MTLUEMethod):
    """Interrupts (like Ctrl-C) on the n-th perturb call, after some shards are finished."""

    def __init__(self, config, calls):
        super().__init__(config)
        self.calls = calls

    def perturb(self, batch, device):
        self.calls -= 1
        if self.calls < 0:
            raise KeyboardInterrupt
        return super().perturb(batch, device)


@pytest.mark.slow
def test_killed_protect_resumes_to_the_same_store_as_an_uninterrupted_run(tmp_path, source):
    config = tiny_config(epochs=3)
    reference = protect_source(source, tmp_path / "ref", config, CPU, progress=False, shard_size=16)

    with pytest.raises(Killed):
        protect_source(source, tmp_path / "P", config, CPU, progress=False, shard_size=16, on_iteration=_kill_after(2))
    assert not (tmp_path / "P" / "manifest.json").exists()
    with pytest.raises(KeyboardInterrupt):
        protect_source(source, tmp_path / "P", config, CPU, progress=False, shard_size=16,
                       method=KilledWhileWriting(config, calls=1))
    assert len(list((tmp_path / "P" / "train").glob("shard-*.h5"))) == 1 and not (tmp_path / "P" / "manifest.json").exists()
    resumed = protect_source(source, tmp_path / "P", config, CPU, progress=False, shard_size=16)

    assert resumed["protection"]["generator_sha256"] == reference["protection"]["generator_sha256"]
    assert [s["sha256"] for s in resumed["splits"]["train"]["shards"]] == \
        [s["sha256"] for s in reference["splits"]["train"]["shards"]]
    assert np.array_equal(stored_images(tmp_path / "P")[0], stored_images(tmp_path / "ref")[0])


def test_tap_and_sep_use_the_given_surrogate_checkpoints(tmp_path, source):
    from mtlue.models.mtl import build_model, save_checkpoint

    ckpts = tmp_path / "ckpts"
    for epoch in (1, 2):
        torch.manual_seed(epoch)
        save_checkpoint(build_model(source.tasks, "small_cnn", 3, 16), ckpts / f"epoch_{epoch}.pt", {"epoch": epoch})
    tap = protect_source(source, tmp_path / "T", tiny_config(base="tap", epochs=1, surrogate_path=str(ckpts / "epoch_1.pt")),
                         CPU, progress=False)
    assert tap["protection"]["surrogate"]["source"] == "given"
    sep = protect_source(source, tmp_path / "S", tiny_config(base="sep", epochs=1, surrogate_path=str(ckpts)),
                         CPU, progress=False)
    assert sep["protection"]["surrogate"]["ensemble_size"] == 2


def test_registry_names_missing_and_unknown_methods(monkeypatch):
    with pytest.raises(ConfigError, match="unknown"):
        method_class("nope")
    monkeypatch.setitem(METHODS, "ghost", Registered("mtlue.protect.ghost_method:Ghost", MTLUEConfig))
    with pytest.raises(ConfigError, match="not available"):
        method_class("ghost")
    assert method_class("mtlue") is MTLUEMethod


def test_config_rejects_bad_options():
    with pytest.raises(ConfigError, match="--base"):
        protect_config({"base": "xyz"})
    with pytest.raises(ConfigError, match="--poison-rate"):
        protect_config({"poison_rate": 1.5})
    assert MTLUEConfig(epochs=10).scaled_milestones() == [6, 8]
    assert MTLUEConfig(epochs=200).scaled_milestones() == [60, 80]


def test_cli_protect_writes_a_store_and_refuses_to_clobber_it(tmp_path):
    from click.testing import CliRunner

    from cli import main

    store = tmp_path / "P"
    args = ["protect", SPEC, str(store), "--method", "mtlue", "--base", "em", "--epochs", "1", "--generator-width", "8",
            "--batch-size", "16", "--samples-per-epoch", "16", "--quiet", "--device", "cpu"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert (store / "manifest.json").is_file() and (tmp_path / "P.work" / "generator.pt").is_file()
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 1 and "--overwrite" in again.output
    bad = CliRunner().invoke(main, args[:3] + ["--protect-tasks", "nope", "--overwrite"] + args[3:])
    assert bad.exit_code == 1 and "--protect-tasks" in bad.output


def test_two_protect_runs_with_one_seed_write_identical_shards(tmp_path):
    from mtlue.data import open_source
    from mtlue.protect.driver import protect_source

    source = open_source("shapes:n=64,size=16,seed=2")
    config = protect_config(dict(method="mtlue", base="tap", epochs=2, batch_size=16, generator_width=8,
                                 surrogate=SurrogateConfig(epochs=1, batch_size=32)))
    first = protect_source(source, tmp_path / "a", config, torch.device("cpu"), progress=False)
    second = protect_source(source, tmp_path / "b", config, torch.device("cpu"), progress=False)
    assert [s["sha256"] for s in first["splits"]["train"]["shards"]] == \
           [s["sha256"] for s in second["splits"]["train"]["shards"]]


def test_protect_cli_defaults_are_every_methods_config_defaults():
    """`mtlue protect --help` shows the defaults a run really uses: an option several methods read
    (--epochs: mtlue's generator epochs, em's rounds) shows their shared default, or each where they differ."""
    import dataclasses

    from cli import main
    from mtlue.protect import METHODS
    from mtlue.protect.config import ProtectConfig

    params = {p.name: p for p in main.commands["protect"].params}
    per_option: dict = {}
    for name, entry in METHODS.items():
        for f in dataclasses.fields(entry.settings):
            per_option.setdefault(f.metadata.get("option") or f.name, {})[name] = f.default
    for option, defaults in per_option.items():
        if option not in params:
            continue
        if len({repr(v) for v in defaults.values()}) == 1:
            # a list option (--robust) is None when not given: protect_config then uses the method's default
            if params[option].default is None and next(iter(defaults.values())) == ():
                continue
            assert params[option].default == next(iter(defaults.values())), option
        else:
            assert params[option].default is None, option
            assert all(f"{m} {v}" in params[option].help for m, v in defaults.items()), option
    assert {"base", "epochs", "lr", "generator_width", "augment", "surrogate_steps", "clamp_inputs", "steps",
            "objective", "fusion", "norm"} <= set(per_option) & set(params)
    for name in ("method", "epsilon", "batch_size", "poison_rate", "seed"):
        assert params[name].default == getattr(ProtectConfig(), name), name
    assert params["surrogate_backbone"].default == SurrogateConfig().backbone
    assert params["surrogate_epochs"].default == SurrogateConfig().epochs
