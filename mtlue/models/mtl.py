"""Hard-parameter-sharing victim networks (MTL) and per-task independent networks (STL).

MTL, as the MTL-UE victims: backbone → global pool → Linear(features, 256) + ELU → one head per
task (binary: 1 logit, multiclass: C logits, regression: 1 output). Inputs are float [0, 1];
normalisation ((x − 0.5) / 0.5) happens inside the model so attacks see [0, 1] images.
"""

from __future__ import annotations

import contextlib
import os
import pickle
from pathlib import Path

import torch
from torch import nn

from mtlue.data.base import TaskSpec
from mtlue.errors import CheckpointError, ConfigError
from mtlue.models.backbones import build_backbone
from mtlue.store.layout import fsync_replace

SHARED_WIDTH = 256
CHECKPOINT_SCHEMA = "mtlue-model/1"


class MultiTaskNet(nn.Module):
    """Shared backbone + Linear(·, 256) + ELU, then one linear head per task; forward → {task: output}."""

    def __init__(self, tasks, backbone: str = "resnet18", in_channels: int = 3, image_size: int = 32):
        super().__init__()
        self.tasks = tuple(tasks)
        self.backbone_name = backbone
        self.backbone, feature_dim = build_backbone(backbone, in_channels, image_size)
        self.shared_head = nn.Sequential(nn.Linear(feature_dim, SHARED_WIDTH), nn.ELU())
        # Heads in a ModuleList (task order), since task names may not be valid module names.
        self.heads = nn.ModuleList(nn.Linear(SHARED_WIDTH, t.output_dim) for t in self.tasks)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Shared representation (B, 256) of images in [0, 1]."""
        return self.shared_head(self.backbone((x - 0.5) / 0.5))

    def heads_forward(self, rep: torch.Tensor) -> dict:
        out = {}
        for task, head in zip(self.tasks, self.heads):
            y = head(rep)
            out[task.name] = y.squeeze(1) if task.output_dim == 1 else y
        return out

    def forward(self, x: torch.Tensor) -> dict:
        return self.heads_forward(self.features(x))

    def shared_parameters(self) -> list:
        return list(self.backbone.parameters()) + list(self.shared_head.parameters())

    def task_parameters(self) -> list:
        return list(self.heads.parameters())


class SingleTaskNets(nn.Module):
    """STL: one independent MultiTaskNet per task; forward merges their outputs into one dict.

    `features` concatenates the K representations (B, 256·K); `heads_forward` splits them again.
    """

    def __init__(self, tasks, backbone: str = "resnet18", in_channels: int = 3, image_size: int = 32):
        super().__init__()
        self.tasks = tuple(tasks)
        self.backbone_name = backbone
        dense = any(t.is_dense for t in self.tasks)  # then every net is dense, so the representations concatenate
        self.nets = nn.ModuleList(_hps_net([t], backbone, in_channels, image_size, dense) for t in self.tasks)
        # a dense net's representation is a feature map: the parts are split along channels (dim 1) too
        self.widths = [net.backbone.out_channels if dense else SHARED_WIDTH for net in self.nets]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([net.features(x) for net in self.nets], dim=1)

    def heads_forward(self, rep: torch.Tensor) -> dict:
        out = {}
        for net, part in zip(self.nets, rep.split(self.widths, dim=1)):
            out.update(net.heads_forward(part))
        return out

    def forward(self, x: torch.Tensor) -> dict:
        out = {}
        for net in self.nets:
            out.update(net(x))
        return out

    def shared_parameters(self) -> list:
        return [p for net in self.nets for p in net.shared_parameters()]

    def task_parameters(self) -> list:
        return [p for net in self.nets for p in net.task_parameters()]


def _hps_net(tasks, backbone: str, in_channels: int, image_size: int, dense: bool) -> nn.Module:
    """One hard-parameter-sharing net: the dense victim (mtlue.models.dense) when `dense`."""
    if dense:
        from mtlue.models.dense import DenseMultiTaskNet

        return DenseMultiTaskNet(tasks, backbone, in_channels)
    return MultiTaskNet(tasks, backbone, in_channels, image_size)


def build_model(tasks, backbone: str = "resnet18", in_channels: int = 3, image_size: int = 32, stl: bool = False) -> nn.Module:
    """A randomly initialised victim for `tasks` (TaskSpec sequence); STL builds one net per task.

    When any task is dense the victim is `mtlue.models.dense.DenseMultiTaskNet`: `backbone` small_cnn is
    its CPU encoder–decoder, resnet18/50 its dilated ResNet with DeepLab (ASPP) heads."""
    tasks = tuple(tasks)
    if not tasks:
        raise ConfigError("build_model: no tasks given")
    model = (SingleTaskNets(tasks, backbone, in_channels, image_size) if stl else
             _hps_net(tasks, backbone, in_channels, image_size, any(t.is_dense for t in tasks)))
    model.build_args = {"tasks": [t.to_json() for t in tasks], "backbone": backbone, "in_channels": int(in_channels), "image_size": int(image_size), "stl": bool(stl)}
    return model


def save_checkpoint(model: nn.Module, path, meta: dict | None = None) -> None:
    """Write the state dict, the build arguments and `meta` (JSON-able) to `path` (atomically)."""
    payload = {"schema": CHECKPOINT_SCHEMA, "build": model.build_args, "meta": meta or {}, "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}}
    atomic_torch_save(payload, path)


def atomic_torch_save(obj, path) -> None:
    """torch.save to `path.tmp`, then fsync and rename: a kill never leaves a half-written checkpoint."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    fsync_replace(str(tmp), str(path))


def load_checkpoint(path, device: torch.device | str = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild the model a checkpoint describes (torch.load with weights_only=True) -> (model, meta)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ConfigError(f"{path}: no such checkpoint")
    payload = load_torch_file(path)
    if not isinstance(payload, dict) or payload.get("schema") != CHECKPOINT_SCHEMA:
        raise ConfigError(f"{path}: not an mtlue model checkpoint (schema {CHECKPOINT_SCHEMA})")
    with checkpoint_errors(path):
        build = dict(payload["build"])
        tasks = [TaskSpec.from_json(t) for t in build.pop("tasks")]
        model = build_model(tasks, **build)
        model.load_state_dict(payload["state_dict"])
    return model.to(device), payload["meta"]


def load_torch_file(path, map_location: torch.device | str = "cpu"):
    """torch.load with weights_only=True: tensors and plain containers only, so a file never runs code.

    Every checkpoint mtlue reads comes through here; CheckpointError names the file it refuses.
    """
    with checkpoint_errors(path):
        return torch.load(os.fspath(path), map_location=map_location, weights_only=True)


@contextlib.contextmanager
def checkpoint_errors(path):
    """Turn what reading a checkpoint can raise (a blocked pickle, a corrupt or foreign file) into one
    CheckpointError naming `path`; loaders that rebuild a module from a loaded file run inside it too."""
    try:
        yield
    except CheckpointError:
        raise
    except pickle.UnpicklingError as exc:
        if "weights only" in str(exc).lower():
            raise CheckpointError(f"{os.fspath(path)}: not a checkpoint mtlue can load safely (it holds objects "
                                  "other than tensors); refusing to unpickle it") from None
        raise CheckpointError(f"{os.fspath(path)}: unreadable checkpoint ({_first_line(exc)})") from None
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, TypeError, AttributeError, IndexError) as exc:
        raise CheckpointError(f"{os.fspath(path)}: not a checkpoint mtlue wrote, or a damaged one "
                              f"({type(exc).__name__}: {_first_line(exc)})") from None


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
