"""The MTL-UE perturbation generator δ = clamp(D([e¹_{y¹}; …; e^K_{y^K}; E(x)]), −ε, ε).

Yu et al., "MTL-UE: Learning to Learn Nothing for Multi-Task Learning", ICML 2025, §3 (ResNetDAE):
E = ResNet-18 stem through layer2 (width 64 → z of 128 channels) with the CIFAR 3×3 stem (CelebA, UTKFace)
or the ImageNet 7×7/2 + maxpool stem (ChestX-ray14), as the reference configs' `imagenet` flag;
one learnable 16×S×S label-prior embedding per (task, class), N(0,1) init; a ConvTranspose /
InstanceNorm / ReLU decoder back to the input size; a hard clamp to the L∞ budget.
Dense tasks (segmentation, depth, normals) get a learned label-map embedding E^k(y^k) of 16×S×S in
place of the lookup: our own design, see mtlue.models.label_maps.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from mtlue.data.base import TaskSpec
from mtlue.errors import ConfigError
from mtlue.models.label_maps import LabelMapEmbedding
from mtlue.models.mtl import atomic_torch_save

EMBED_CHANNELS = 16
STEMS = ("cifar", "imagenet")
# a source that declares no stem gets the ImageNet one from this shorter side on: ImageNet's own
# crop size; the reference uses it only for 256 px ChestX-ray14, and CIFAR's for 70 and 140 px faces
IMAGENET_STEM_MIN_SIDE = 224


class BasicBlock(nn.Module):
    """ResNet basic block: two 3×3 conv-BN, identity or 1×1 projection shortcut."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


def _conv_out(size: int, kernel: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel) // stride + 1


def stem_for_size(image_shape) -> str:
    """The stem for images whose source declares none: "imagenet" from a 224 px shorter side, else "cifar"."""
    return "imagenet" if min(int(image_shape[0]), int(image_shape[1])) >= IMAGENET_STEM_MIN_SIDE else "cifar"


def stem_for_source(source) -> str:
    """The stem `--generator-stem auto` picks: the source class's `generator_stem`, else `stem_for_size`."""
    return getattr(source, "generator_stem", None) or stem_for_size(source.image_shape)


def resolve_stem(requested: str, source) -> str:
    """`requested` ("cifar" | "imagenet"), or the source's stem for "auto"."""
    if requested == "auto":
        return stem_for_source(source)
    if requested not in STEMS:
        raise ConfigError(f"--generator-stem {requested!r}: one of auto, {', '.join(STEMS)}")
    return requested


def encoder_output_size(size: int, imagenet_stem: bool) -> int:
    """Spatial size S of z for an input side `size` (CIFAR stem: ⌈size/2⌉; ImageNet stem: ≈ size/8)."""
    if imagenet_stem:
        size = _conv_out(size, 7, 2, 3)
        size = _conv_out(size, 3, 2, 1)
    return _conv_out(size, 3, 2, 1)


class UEGenerator(nn.Module):
    """Sample-wise, label-conditioned perturbation generator (MTL-UE ResNetDAE).

    `forward(x, labels, masks, protected)` with x float (B,C,H,W) in [0,1], labels {task: (B,)}
    returns δ of the same shape with ‖δ‖∞ ≤ epsilon. A task not in `protected`, or a sample whose
    label is missing (mask False), gets the mean of that task's class embeddings. A dense task's
    label map (the dense tensor layout of mtlue.data.base) goes through its `LabelMapEmbedding`
    instead; there a task not protected or a missing label is an all-invalid map. `stem` is "cifar"
    or "imagenet" (None: `stem_for_size`).
    """

    def __init__(self, tasks, image_shape, epsilon: float, stem: str | None = None, width: int = 64):
        super().__init__()
        self.width = int(width)
        w = self.width
        height, width, channels = (int(v) for v in image_shape)
        self.tasks = tuple(tasks)
        self.image_shape = (height, width, channels)
        self.epsilon = float(epsilon)
        self.straight_through = True  # training-time gradient of the clamp; see clamp_to_budget
        self.stem = stem_for_size(self.image_shape) if stem is None else stem
        if self.stem not in STEMS:
            raise ConfigError(f"generator stem {self.stem!r}: one of {', '.join(STEMS)}")
        self.imagenet_stem = self.stem == "imagenet"
        self.class_tasks = tuple(t for t in self.tasks if t.is_classification)
        self.dense_tasks = tuple(t for t in self.tasks if t.is_dense)
        self.spatial = (encoder_output_size(height, self.imagenet_stem), encoder_output_size(width, self.imagenet_stem))

        if self.imagenet_stem:
            stem_layers = [nn.Conv2d(channels, w, 7, 2, 3, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True),
                           nn.MaxPool2d(3, 2, 1)]
        else:
            stem_layers = [nn.Conv2d(channels, w, 3, 1, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
        self.encoder = nn.Sequential(*stem_layers, BasicBlock(w, w), BasicBlock(w, w),
                                     BasicBlock(w, 2 * w, stride=2), BasicBlock(2 * w, 2 * w))

        size = EMBED_CHANNELS * self.spatial[0] * self.spatial[1]
        # a list in class-task order, not a ModuleDict keyed by task name: a task may be called
        # `half`, `train` or `to`, which a ModuleDict refuses as a key (nn.Module attributes)
        self.embeddings = nn.ModuleList(nn.Embedding(t.num_classes, size) for t in self.class_tasks)
        for table in self.embeddings:
            nn.init.normal_(table.weight, 0.0, 1.0)
        # empty without dense tasks: a classification-only generator has the same parameters and init
        self.label_maps = nn.ModuleList(LabelMapEmbedding(t, self.spatial, EMBED_CHANNELS) for t in self.dense_tasks)

        in_dec = EMBED_CHANNELS * (len(self.class_tasks) + len(self.dense_tasks)) + 2 * w
        h = w // 2
        if self.imagenet_stem:
            self.decoder = nn.Sequential(
                nn.ConvTranspose2d(in_dec, w, 4, 2, 1), nn.ConvTranspose2d(w, w, 3, 1, 1), nn.InstanceNorm2d(w), nn.ReLU(True),
                nn.ConvTranspose2d(w, h, 4, 2, 1), nn.InstanceNorm2d(h), nn.ReLU(True),
                nn.ConvTranspose2d(h, channels, 4, 2, 1))
        else:
            self.decoder = nn.Sequential(
                nn.ConvTranspose2d(in_dec, w, 4, 2, 1), nn.ConvTranspose2d(w, w, 3, 1, 1), nn.InstanceNorm2d(w), nn.ReLU(True),
                nn.ConvTranspose2d(w, h, 3, 1, 1), nn.InstanceNorm2d(h), nn.ReLU(True),
                nn.ConvTranspose2d(h, channels, 3, 1, 1))

    def embedding_tables(self) -> dict:
        """{task: (C_k, 16·S·S) weight} of the classification tasks, in task order."""
        return {task.name: table.weight for task, table in zip(self.class_tasks, self.embeddings)}

    def label_priors(self, labels: dict, masks: dict | None, protected, batch_size: int) -> torch.Tensor:
        """(B, 16K, S, S) in task order: each sample's class embedding per classification task (or the
        task's mean embedding), each dense task's label-map embedding."""
        masks = masks or {}
        maps = []
        lookups, dense = iter(self.embeddings), iter(self.label_maps)
        for task in self.tasks:
            if task.is_dense:
                module = next(dense)
                unprotected = protected is not None and task.name not in protected
                maps.append(module.unknown(batch_size) if unprotected else
                            module(labels[task.name], masks.get(task.name)))
            elif task.is_classification:
                maps.append(self._class_prior(task, next(lookups).weight, labels, masks, protected, batch_size))
        return torch.cat(maps, 1) if maps else None

    def _class_prior(self, task, weight, labels: dict, masks: dict, protected, batch_size: int) -> torch.Tensor:
        """e^k_{y^k} of one classification task, reshaped to 16×S×S; the task's mean embedding where it is
        not protected or its label is missing."""
        mean = weight.mean(0, keepdim=True).expand(batch_size, -1)
        if protected is not None and task.name not in protected:
            chosen = mean
        else:
            label = labels[task.name].reshape(-1).long().clamp(0, task.num_classes - 1)
            # one-hot product, not weight[label]: the indexing backward sums rows in a
            # thread-dependent order on CPU, which made generator runs differ bit-wise
            chosen = F.one_hot(label, task.num_classes).to(weight.dtype) @ weight
            mask = masks.get(task.name)
            if mask is not None:
                chosen = torch.where(mask.reshape(-1, 1).bool(), chosen, mean)
        return chosen.reshape(batch_size, EMBED_CHANNELS, *self.spatial)

    def forward(self, x: torch.Tensor, labels: dict, masks: dict | None = None, protected=None) -> torch.Tensor:
        z = self.encoder(x)
        priors = self.label_priors(labels, masks, protected, x.shape[0])
        hidden = z if priors is None else torch.cat([priors.to(z.dtype), z], 1)
        out = self.decoder(hidden)
        out = _fit_size(out, x.shape[-2], x.shape[-1])
        return clamp_to_budget(out, self.epsilon, self.straight_through)

    def build_args(self) -> dict:
        return {"tasks": [t.to_json() for t in self.tasks], "image_shape": list(self.image_shape),
                "epsilon": self.epsilon, "imagenet_stem": self.imagenet_stem, "stem": self.stem, "width": self.width}


def clamp_to_budget(out: torch.Tensor, epsilon: float, straight_through: bool = True) -> torch.Tensor:
    """δ = clamp(out, −ε, ε); with `straight_through` the backward pass treats the clamp as identity.

    The value is the paper's hard clamp either way. The reference code's plain clamp passes no
    gradient where |out| > ε, which is nearly every pixel of a freshly initialised decoder, so the
    generator barely learns; the straight-through gradient keeps every pixel trainable.
    """
    bounded = out.clamp(-epsilon, epsilon)
    return bounded.detach() + (out - out.detach()) if straight_through else bounded  # x − x is exactly 0


def _fit_size(out: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Crop (or replicate-pad) the decoder output to the input size; odd inputs decode one pixel large."""
    h, w = out.shape[-2:]
    if h > height or w > width:
        top, left = (max(h - height, 0)) // 2, (max(w - width, 0)) // 2
        out = out[..., top:top + min(h, height), left:left + min(w, width)]
    h, w = out.shape[-2:]
    if h < height or w < width:
        out = F.pad(out, (0, width - w, 0, height - h), mode="replicate")
    return out


def build_generator(tasks, image_shape, epsilon: float, stem: str | None = None, width: int = 64) -> UEGenerator:
    """A freshly initialised generator for `tasks` and stored images of `image_shape` (H,W,C).

    `stem` is "cifar" or "imagenet" (None: `stem_for_size`); `width` is the stem channel count
    (paper 64 → z has 128 channels); smaller widths trade capacity for CPU time."""
    return UEGenerator(tasks, image_shape, epsilon, stem, width)


def save_generator(generator: UEGenerator, path: str | Path, meta: dict | None = None) -> None:
    """Save build args + weights (readable with torch.load(weights_only=True))."""
    atomic_torch_save({"build": generator.build_args(), "state": generator.state_dict(), "meta": meta or {}}, path)


def load_generator(path: str | Path, device: torch.device) -> tuple[UEGenerator, dict]:
    """Inverse of `save_generator`: (generator on `device`, meta). Tensors only (no code runs); a
    blocked, damaged or foreign file is a CheckpointError naming `path`."""
    from mtlue.models.mtl import checkpoint_errors, load_torch_file

    blob = load_torch_file(path, map_location=device)
    with checkpoint_errors(path):
        build = blob["build"]
        stem = build.get("stem") or ("imagenet" if build["imagenet_stem"] else "cifar")  # files before `stem`
        generator = UEGenerator([TaskSpec.from_json(t) for t in build["tasks"]], build["image_shape"],
                                build["epsilon"], stem, build.get("width", 64))
        generator.load_state_dict(blob["state"])
        return generator.to(device), blob.get("meta", {})


def embedding_count(tasks) -> int:
    """Σ_k C_k label-prior rows (vs ∏_k C_k label combinations for a class-wise pattern table)."""
    return sum(t.num_classes for t in tasks if t.is_classification)


__all__ = ["UEGenerator", "build_generator", "save_generator", "load_generator", "encoder_output_size",
           "embedding_count", "resolve_stem", "stem_for_size", "stem_for_source", "STEMS"]
