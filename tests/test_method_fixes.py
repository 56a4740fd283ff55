"""Review fixes of the MTL-UE method: the generator's encoder stem, SEP's regulariser weight, one EM surrogate loop."""

import sys
from pathlib import Path

import pytest
import torch

from mtlue.data import open_source
from mtlue.data.base import Source, TaskSpec
from mtlue.errors import ConfigError
from mtlue.models.generator import build_generator, load_generator, resolve_stem, save_generator, stem_for_source
from mtlue.models.mtl import build_model, save_checkpoint
from mtlue.protect import em as em_module
from mtlue.protect import mtlue_method, surrogate
from mtlue.protect import protect_config
from mtlue.protect.base import ProtectContext
from mtlue.protect.config import MTLUEConfig, SurrogateConfig
from mtlue.protect.driver import protect_source
from mtlue.protect.em import EMMethod
from mtlue.protect.mtlue_method import MTLUEMethod
from mtlue.protect.surrogate import PoisonedError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

CPU = torch.device("cpu")
SPEC = "shapes:n=48,size=16,seed=3"
PIPELINES = Path(__file__).resolve().parent.parent / "pipelines"


@pytest.fixture(scope="module")
def source():
    return open_source(SPEC)


def tiny_config(**changes):
    base = dict(method="mtlue", base="em", epochs=1, batch_size=16, generator_width=8, seed=1,
                surrogate=SurrogateConfig(backbone="small_cnn"), samples_per_epoch=16, surrogate_steps=2)
    return protect_config({**base, **changes}, explicit=changes)  # base keys the method does not read: dropped


class SizedSource(Source):
    """A source class that declares no stem (as a folder): only its image size decides."""

    def __init__(self, height, width):
        self.image_shape = (height, width, 3)


def write_checkpoints(source, folder: Path, epochs=(1, 2)) -> Path:
    for epoch in epochs:
        torch.manual_seed(epoch)
        save_checkpoint(build_model(source.tasks, "small_cnn", 3, 16), folder / f"epoch_{epoch}.pt", {"epoch": epoch})
    return folder


# -- 1. encoder stem -------------------------------------------------------------------------------------

def test_each_source_declares_the_reference_stem_and_others_go_by_size():
    from mtlue.data import source_class

    declared = {name: source_class(name).generator_stem
                for name in ("celeba", "utkface", "chestxray14", "digits", "shapes", "photos", "folder")}
    assert declared == {"celeba": "cifar", "utkface": "cifar", "chestxray14": "imagenet", "digits": "cifar",
                        "shapes": "cifar", "photos": "cifar", "folder": None}
    assert stem_for_source(SizedSource(224, 300)) == "imagenet"
    assert stem_for_source(SizedSource(223, 300)) == "cifar"
    assert stem_for_source(SizedSource(140, 140)) == "cifar"  # UTKFace-sized, unlike the old 128 px rule


def test_an_explicit_stem_wins_over_the_sources_and_a_bad_one_names_the_option(source):
    assert resolve_stem("auto", source) == "cifar"
    assert resolve_stem("imagenet", source) == "imagenet"
    with pytest.raises(ConfigError, match="--generator-stem"):
        MTLUEConfig(generator_stem="vit")
    from cli import main

    defaults = {p.name: p.default for p in main.commands["protect"].params}
    assert defaults["generator_stem"] == MTLUEConfig().generator_stem == "auto"


def test_the_manifest_records_the_resolved_stem_and_the_generator_is_built_with_it(tmp_path, source):
    auto = protect_source(source, tmp_path / "A", tiny_config(), CPU, progress=False)
    assert auto["protection"]["generator_stem"] == "cifar"
    assert auto["protection"]["config"]["generator_stem"] == "auto"  # what was asked, beside what it meant
    imagenet = protect_source(source, tmp_path / "I", tiny_config(generator_stem="imagenet"), CPU, progress=False)
    assert imagenet["protection"]["generator_stem"] == "imagenet"
    assert load_generator(tmp_path / "I.work" / "generator.pt", CPU)[0].stem == "imagenet"


def test_a_cached_generator_with_another_stem_is_not_reused(tmp_path, source):
    work = tmp_path / "work"
    protect_source(source, tmp_path / "C", tiny_config(generator_stem="cifar"), CPU, work_dir=work, progress=False)
    assert load_generator(work / "generator.pt", CPU)[0].stem == "cifar"
    protect_source(source, tmp_path / "I", tiny_config(generator_stem="imagenet"), CPU, work_dir=work, progress=False)
    assert load_generator(work / "generator.pt", CPU)[0].stem == "imagenet"

    method = MTLUEMethod(tiny_config())
    method.context, method.stem = ProtectContext(source, tiny_config(), CPU, tmp_path / "key"), "cifar"
    assert method._fingerprint()["generator_stem"] == "cifar"  # the resume key holds the resolved stem
    assert "generator_stem" in tiny_config().resume_settings()


def test_a_given_generator_with_another_stem_is_a_config_error(tmp_path, source):
    path = tmp_path / "g.pt"
    save_generator(build_generator(source.tasks, source.image_shape, 8 / 255, "imagenet", width=8), path)
    with pytest.raises(ConfigError, match="imagenet stem, not --generator-stem cifar"):
        protect_source(source, tmp_path / "P", tiny_config(generator_stem="cifar", generator_path=str(path)), CPU,
                       progress=False)
    given = protect_source(source, tmp_path / "Q", tiny_config(generator_path=str(path)), CPU, progress=False)
    assert given["protection"]["generator_stem"] == "imagenet"  # auto takes the checkpoint's


GENERATOR_RECIPES = sorted(p.name for p in PIPELINES.glob("*.toml")
                           if tomllib.loads(p.read_text())["protect"].get("method", "texture") == "mtlue")


@pytest.mark.parametrize("recipe", GENERATOR_RECIPES)
def test_every_generator_recipe_names_its_stem_with_a_reason(recipe):
    text = (PIPELINES / recipe).read_text()
    stem = tomllib.loads(text)["protect"].get("generator_stem")
    assert stem in ("cifar", "imagenet"), recipe
    line = next(line for line in text.splitlines() if line.startswith("generator_stem"))
    assert "#" in line and len(line.split("#", 1)[1].strip()) > 10, recipe


# -- 2. SEP's regulariser weight -------------------------------------------------------------------------

def _objective_gradient(source, tmp_path, members: int) -> torch.Tensor:
    config = tiny_config(base="sep")
    method = MTLUEMethod(config)
    method.context = ProtectContext(source, config, CPU, tmp_path)
    method.protected = method.context.protected_tasks
    torch.manual_seed(0)
    generator = build_generator(source.tasks, source.image_shape, config.eps, "cifar", width=8)
    torch.manual_seed(1)
    member = surrogate.freeze(build_model(source.tasks, "small_cnn", 3, 16))
    batch = next(source.batches("train", 8))
    from mtlue.data.base import batch_tensors

    x, labels, masks = batch_tensors(batch, CPU)
    loss, _, _ = method._generator_objective(generator, x, labels, masks, [member] * members, torch.nn.Identity())
    loss.backward()
    return torch.cat([p.grad.reshape(-1) for p in generator.parameters() if p.grad is not None])


def test_a_three_checkpoint_ensemble_pulls_the_generator_three_times_as_hard_regulariser_included(tmp_path, source):
    # three copies of one checkpoint: the reference's per-checkpoint backward of loss_m + regulariser gives
    # exactly 3 x the one-checkpoint gradient; adding the regulariser once would not
    one = _objective_gradient(source, tmp_path / "1", 1)
    three = _objective_gradient(source, tmp_path / "3", 3)
    assert torch.allclose(three, 3 * one, rtol=1e-4, atol=1e-7)


def test_the_manifest_records_the_effective_regulariser_weights(tmp_path, source):
    ckpts = write_checkpoints(source, tmp_path / "ckpts", epochs=(1, 2, 3))
    sep = protect_source(source, tmp_path / "S", tiny_config(base="sep", surrogate_path=str(ckpts)), CPU,
                         progress=False)["protection"]
    assert sep["regulariser_scale"] == 3
    assert sep["effective_lambda_intra"] == 3 * sep["lambda_intra"]
    assert sep["effective_lambda_inter"] == 3 * sep["lambda_inter"]
    assert "regulariser_scale" in sep["regulariser_note"]
    em = protect_source(source, tmp_path / "E", tiny_config(), CPU, progress=False)["protection"]
    assert em["regulariser_scale"] == 1 and em["effective_lambda_inter"] == em["lambda_inter"]


# -- 3. one EM surrogate loop and one error ------------------------------------------------------------

def test_both_em_methods_train_their_surrogate_with_the_one_clipped_loop(tmp_path, source, monkeypatch):
    assert em_module.train_on_poisoned is surrogate.train_on_poisoned is mtlue_method.train_on_poisoned
    assert em_module.PoisonedError is PoisonedError is mtlue_method.PoisonedError
    calls, clips, worst = [], [], []
    real_loop, real_clip, real_worst = surrogate.train_on_poisoned, torch.nn.utils.clip_grad_norm_, PoisonedError.worst

    def counting_loop(*args, **kwargs):
        calls.append(args[4][0].name)
        return real_loop(*args, **kwargs)

    def recording_clip(parameters, max_norm, *args, **kwargs):
        clips.append(max_norm)
        return real_clip(parameters, max_norm, *args, **kwargs)

    def counting_worst(self):
        worst.append(self)
        return real_worst(self)

    for module in (em_module, mtlue_method):
        monkeypatch.setattr(module, "train_on_poisoned", counting_loop)
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", recording_clip)
    monkeypatch.setattr(PoisonedError, "worst", counting_worst)
    EMMethod(tiny_config(method="em", steps=2)).prepare(ProtectContext(source, tiny_config(method="em", steps=2), CPU,
                                                                       tmp_path / "em", progress=False))
    assert len(calls) == 1 and len(worst) == 1 and clips == [5.0, 5.0]
    MTLUEMethod(tiny_config()).prepare(ProtectContext(source, tiny_config(), CPU, tmp_path / "mtlue", progress=False))
    assert len(calls) == 2 and len(worst) == 2 and clips == [5.0] * 4


def test_the_em_error_is_the_worst_protected_classification_tasks():
    tasks = (TaskSpec("smiling", "binary", 2), TaskSpec("age", "multiclass", 3), TaskSpec("size", "regression", 1))
    labels = {"smiling": torch.tensor([1, 1, 0, 0]), "age": torch.tensor([0, 1, 2, 2]),
              "size": torch.tensor([0.1, 0.2, 0.3, 0.4])}
    outputs = {"smiling": torch.tensor([[2.0], [3.0], [-1.0], [4.0]]),  # one miss in four
               "age": torch.eye(3)[[1, 1, 0, 0]] * 5,  # misses samples 0, 2, 3; sample 3's label is missing
               "size": torch.zeros(4, 1)}
    masks = {"smiling": torch.ones(4, dtype=torch.bool), "age": torch.tensor([True, True, True, False]),
             "size": torch.ones(4, dtype=torch.bool)}
    error = PoisonedError(tasks, ("smiling", "age", "size"))
    error.add(outputs, labels, masks)
    assert error.worst() == pytest.approx(2 / 3)  # age: 2 of 3 labelled; the old pooled mean was 3/7
    only_smiling = PoisonedError(tasks, ("smiling", "size"))
    only_smiling.add(outputs, labels, masks)
    assert only_smiling.worst() == pytest.approx(1 / 4)
    assert PoisonedError(tasks, ("size",)).worst() == 0.0
