"""The MTL-UE defaults that make the shortcut carry over to other attackers, and `mtlue run --set`."""

from pathlib import Path

import pytest
import torch

from mtlue.data import open_source
from mtlue.data.base import TaskSpec
from mtlue.errors import ConfigError
from mtlue.protect import mtlue_method, protect_config, surrogate
from mtlue.protect.config import MTLUEConfig, SurrogateConfig
from mtlue.protect.driver import protect_source
from mtlue.protect.mtlue_method import resolve_augment
from mtlue.recipe import load_recipe

CPU = torch.device("cpu")
SPEC = "shapes:n=48,size=16,seed=3"
PHOTOS_RECIPE = str(Path(__file__).resolve().parent.parent / "pipelines" / "photos.toml")


def test_auto_eot_is_the_attackers_standard_augmentation_for_these_tasks():
    safe = TaskSpec("a", "binary", 2, flip_safe=True)
    unsafe = TaskSpec("b", "binary", 2, flip_safe=False)
    assert MTLUEConfig().augment == "auto"
    assert resolve_augment("auto", (safe,)) == "crop_flip"
    assert resolve_augment("auto", (safe, unsafe)) == "crop"  # a flip would change b's label
    assert resolve_augment("none", (safe,)) == "none" and resolve_augment("crop_flip", (unsafe,)) == "crop_flip"
    assert resolve_augment("auto", open_source("digits").tasks) == "crop"  # mirrored digits swap left and right


def test_the_em_surrogate_trains_one_pass_per_generator_pass_by_default(tmp_path, monkeypatch):
    source = open_source(SPEC)  # 48 train samples of shapes: 3 batches of 16
    steps = []
    real = surrogate.train_on_poisoned

    def counting(model, optimiser, loader, poison, tasks, count, device):
        steps.append(count)
        return real(model, optimiser, loader, poison, tasks, count, device)

    monkeypatch.setattr(mtlue_method, "train_on_poisoned", counting)
    base = dict(method="mtlue", base="em", epochs=2, batch_size=16, generator_width=8, seed=1,
                surrogate=SurrogateConfig(backbone="small_cnn"))
    record = protect_source(source, tmp_path / "P", protect_config(base), CPU, progress=False)["protection"]
    assert steps == [3, 3]
    assert record["surrogate_steps_per_iteration"] == 3
    assert record["augment"] == resolve_augment("auto", source.tasks) and record["config"]["augment"] == "auto"
    steps.clear()
    protect_source(source, tmp_path / "Q", protect_config({**base, "surrogate_steps": 2, "samples_per_epoch": 16}),
                   CPU, progress=False)
    assert steps == [2, 2]
    with pytest.raises(ConfigError, match="--surrogate-steps -1"):
        MTLUEConfig(surrogate_steps=-1)


def test_run_set_changes_one_recipe_key_and_names_the_run_after_it():
    recipe = load_recipe(PHOTOS_RECIPE, None, ["protect.period=4", "victims.seeds=[0]", "seed=3"])
    assert recipe.protect["period"] == 4 and recipe.victims["seeds"] == [0] and recipe.seed == 3
    assert recipe.name == "photos-period=4-seeds=0-seed=3"
    assert load_recipe(PHOTOS_RECIPE, "mine", ["protect.period=16"]).name == "mine"
    plain = load_recipe(PHOTOS_RECIPE)
    assert plain.protect["method"] == "texture" and "period" not in plain.protect and plain.name == "photos"
    with pytest.raises(ConfigError, match=r"no recipe section \[protekt\]"):
        load_recipe(PHOTOS_RECIPE, None, ["protekt.base=tap"])
    with pytest.raises(ConfigError, match="SECTION.KEY=VALUE"):
        load_recipe(PHOTOS_RECIPE, None, ["protect.base"])


def test_a_restarted_surrogate_is_a_fresh_model_with_a_fresh_optimiser(tmp_path):
    from mtlue.protect.base import ProtectContext
    from mtlue.protect.surrogate import fresh_surrogate, restart_surrogate

    source = open_source(SPEC)
    config = protect_config(dict(method="mtlue", base="em", batch_size=16, seed=1, surrogate_restart=True))
    context = ProtectContext(source, config, CPU, tmp_path / "work", progress=False)
    model, optimiser = fresh_surrogate(context, 5)
    x = torch.rand(4, 3, 16, 16)
    sum(o.sum() for o in model(x).values()).backward()
    optimiser.step()  # the model has moved and Adam holds moments
    assert optimiser.state
    restart_surrogate(context, model, optimiser, 9)
    expected, _ = fresh_surrogate(context, 9)
    assert not optimiser.state
    for (name, got), (_, want) in zip(model.state_dict().items(), expected.state_dict().items()):
        assert torch.equal(got, want), name


def test_surrogate_restart_changes_the_generator_and_is_recorded(tmp_path):
    source = open_source(SPEC)
    base = dict(method="mtlue", base="em", epochs=2, batch_size=16, generator_width=8, seed=1,
                surrogate=SurrogateConfig(backbone="small_cnn"))
    assert MTLUEConfig().surrogate_restart is True  # the default
    plain = protect_source(source, tmp_path / "A", protect_config({**base, "surrogate_restart": False}), CPU,
                           progress=False)["protection"]
    restarted = protect_source(source, tmp_path / "B", protect_config({**base, "surrogate_restart": True}), CPU,
                               progress=False)["protection"]
    assert plain["config"]["surrogate_restart"] is False and restarted["config"]["surrogate_restart"] is True
    assert plain["generator_sha256"] != restarted["generator_sha256"]
