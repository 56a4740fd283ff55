"""Attacker profiles and the standard augmentation: the ordinary ways people train on a release."""

import pytest
import torch

from mtlue.augment import build_augmentation, describe_augmentation
from mtlue.data.base import TaskSpec
from mtlue.errors import ConfigError
from mtlue.models.backbones import BACKBONES
from mtlue.models.mtl import build_model
from mtlue.profiles import build_profiles, parse_profile_spec
from mtlue.train import TrainConfig

UNSAFE = (TaskSpec("shape", "multiclass", 3, flip_safe=True), TaskSpec("quadrant", "multiclass", 4))
SAFE = (TaskSpec("shape", "multiclass", 3, flip_safe=True), TaskSpec("large", "binary", 2, flip_safe=True))


def bright_left_halves(n=256, size=32):
    images = torch.zeros(n, 3, size, size)
    images[..., : size // 2] = 1.0
    return images


def mirrored_count(augment, images):
    torch.manual_seed(0)
    out = augment(images)
    side = images.shape[-1]
    left, right = out[..., : side * 3 // 8].mean(dim=(1, 2, 3)), out[..., -side * 3 // 8:].mean(dim=(1, 2, 3))
    return int((right > left).sum())


def test_a_flip_unsafe_task_is_never_flipped():
    images = bright_left_halves()
    assert mirrored_count(build_augmentation("standard", UNSAFE, (32, 32, 3)), images) == 0
    flipped = mirrored_count(build_augmentation("standard", SAFE, (32, 32, 3)), images)
    assert 64 < flipped < 192  # about half, with p = 0.5
    assert "no flip (quadrant not flip-safe)" in describe_augmentation("standard", UNSAFE, (32, 32, 3))


def test_small_images_get_padded_crops_and_large_ones_resized_crops():
    small = build_augmentation("standard", UNSAFE, (32, 32, 3))
    large = build_augmentation("standard", SAFE, (128, 128, 3))
    assert small(torch.rand(4, 3, 32, 32)).shape == (4, 3, 32, 32)
    assert large(torch.rand(4, 3, 128, 128)).shape == (4, 3, 128, 128)
    assert "4 px zero padding" in describe_augmentation("standard", UNSAFE, (32, 32, 3))
    assert "random-resized crop" in describe_augmentation("standard", SAFE, (128, 128, 3))
    assert isinstance(build_augmentation("none", SAFE, (32, 32, 3)), torch.nn.Identity)
    with pytest.raises(ConfigError, match="augment"):
        build_augmentation("autoaugment", SAFE, (32, 32, 3))


@pytest.mark.parametrize("backbone", ["resnet8", "resnet20"])
def test_cifar_resnets_build_for_small_images(backbone):
    assert backbone in BACKBONES
    model = build_model(UNSAFE, backbone, 3, 32)
    outputs = model(torch.rand(2, 3, 32, 32))
    assert {name: tuple(o.shape) for name, o in outputs.items()} == {"shape": (2, 3), "quadrant": (2, 4)}


def test_profiles_from_presets_and_cli_specs():
    base = TrainConfig(backbone="small_cnn", epochs=8)
    tables = [{"name": "plain"}, parse_profile_spec("sgd:backbone=resnet8,epochs=12,weightings=ew+fairgrad")]
    plain, sgd = build_profiles(tables, base, ("ew", "uw"), "--profile")
    assert plain.victim == base and plain.weightings == ("ew", "uw")
    assert (sgd.victim.optimizer, sgd.victim.schedule, sgd.victim.augment) == ("sgd", "cosine", "standard")
    assert (sgd.victim.backbone, sgd.victim.epochs, sgd.weightings) == ("resnet8", 12, ("ew", "fairgrad"))
    assert sgd.config_for("fairgrad", 1).seed == 1 and sgd.config_for("stl", 0).stl
    rep = build_profiles([{"name": "plain", "grad_space": "representation"}], base, ("ew", "fairgrad"), "x")[0]
    assert [rep.row_label(w) for w in ("ew", "fairgrad")] == ["ew", "fairgrad~rep"]
    assert plain.row_label("fairgrad") == "fairgrad"


@pytest.mark.parametrize("table, message", [
    ({"name": "a", "backbone": "resnet9000"}, "unknown backbone"),
    ({"name": "a", "optimizer": "lbfgs"}, "optimizer"),
    ({"name": "a", "weightings": ["fairgard"]}, "fairgard"),
    ({"name": "a", "epochs": "ten"}, "epochs"),
    ({"name": "a", "seed": 3}, "per victim row"),
    ({"name": "a", "preset": "fancy"}, "preset"),
    ({"name": "bad name"}, "name"),
])
def test_bad_profiles_are_refused_naming_the_key(table, message):
    with pytest.raises(ConfigError, match=message):
        build_profiles([table], TrainConfig(), ("ew",), "recipe.toml [victims]")


def test_duplicate_profile_names_are_refused():
    with pytest.raises(ConfigError, match="used twice"):
        build_profiles([{"name": "sgd"}, {"name": "sgd"}], TrainConfig(), ("ew",), "x")
