"""Victim networks: output shapes per task kind, STL independence, checkpoints."""

import pytest
import torch

from mtlue.data.base import TaskSpec
from mtlue.errors import ConfigError
from mtlue.models import build_model, load_checkpoint, save_checkpoint

TASKS = (TaskSpec("smile", "binary", 2), TaskSpec("age", "multiclass", 9), TaskSpec("score", "regression", 1))



def _check_outputs(outputs, batch):
    assert set(outputs) == {"smile", "age", "score"}
    assert outputs["smile"].shape == (batch,)
    assert outputs["age"].shape == (batch, 9)
    assert outputs["score"].shape == (batch,)


@pytest.mark.parametrize("backbone,channels,size", [("small_cnn", 3, 16), ("resnet18", 1, 16), ("resnet18", 3, 96)])
def test_heads_match_task_kinds(backbone, channels, size):
    model = build_model(TASKS, backbone, in_channels=channels, image_size=size).eval()
    x = torch.rand(2, channels, size, size)
    _check_outputs(model(x), 2)
    assert model.features(x).shape == (2, 256)
    n_shared = sum(p.numel() for p in model.shared_parameters())
    n_task = sum(p.numel() for p in model.task_parameters())
    assert n_shared + n_task == sum(p.numel() for p in model.parameters())
    assert n_task == 257 * 1 + 257 * 9 + 257 * 1


@pytest.mark.slow
@pytest.mark.parametrize("backbone,channels,size", [("resnet50", 3, 32), ("vgg16_bn", 3, 16), ("densenet121", 1, 32), ("vit_b_16", 1, 28), ("vit_b_16", 3, 64)])
def test_large_backbones_build_for_small_images(backbone, channels, size):
    model = build_model(TASKS, backbone, in_channels=channels, image_size=size).eval()
    with torch.no_grad():
        _check_outputs(model(torch.rand(2, channels, size, size)), 2)


def test_unknown_backbone_is_a_config_error():
    with pytest.raises(ConfigError, match="resnet1"):
        build_model(TASKS, "resnet1")


def test_stl_nets_are_independent_per_task():
    model = build_model(TASKS, "small_cnn", image_size=16, stl=True)
    x = torch.rand(4, 3, 16, 16)
    outputs = model(x)
    _check_outputs(outputs, 4)
    assert model.features(x).shape == (4, 256 * 3)
    outputs["smile"].sum().backward()
    touched = [any(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters()) for net in model.nets]
    assert touched == [True, False, False]


def test_checkpoint_round_trip_gives_same_outputs(tmp_path):
    model = build_model(TASKS, "small_cnn", in_channels=1, image_size=16).eval()
    path = tmp_path / "model.pt"
    save_checkpoint(model, path, {"epoch": 3})
    loaded, meta = load_checkpoint(path, "cpu")
    loaded.eval()
    assert meta == {"epoch": 3}
    assert loaded.tasks == TASKS
    x = torch.rand(3, 1, 16, 16)
    for name, value in model(x).items():
        torch.testing.assert_close(loaded(x)[name], value)


def test_loading_a_non_checkpoint_names_the_file(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, path)
    with pytest.raises(ConfigError, match="other.pt"):
        load_checkpoint(path)
