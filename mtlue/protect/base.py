"""Protection configuration, the ProtectionMethod interface and the shared run context.

A method turns a multi-task train split into per-sample perturbations δ with ‖δ‖∞ ≤ ε
(ε in 1/255 units in the config). The driver asks it for δ batch by batch and writes
`round(clip(x·255 + δ·255, 0, 255))` into the store.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from mtlue.data.base import Batch, Source
from mtlue.errors import ConfigError

BASES = ("em", "tap", "sep")
OBJECTIVES = ("total", "dgba")
FUSIONS = ("average", "patch")
NORMS = ("linf", "l2")
CLASSWISE_METHODS = ("lsp", "ar")
AUGMENTS = ("crop_flip", "crop", "none")
GENERATOR_STEMS = ("auto", "cifar", "imagenet")


@dataclass(frozen=True)
class SurrogateConfig:
    """How the clean surrogate (TAP/SEP, and the baselines) is trained with `mtlue.train.train_model`."""

    backbone: str = "small_cnn"
    epochs: int = 6  # paper: 60 (ResNet-18); 6 small_cnn epochs keep a CPU run on digits at a minute
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 1e-4
    num_checkpoints: int = 15  # SEP ensemble size
    checkpoint_every: int = 0  # 0 = max(1, epochs // num_checkpoints)
    weighting: str = "ew"

    @property
    def checkpoint_interval(self) -> int:
        return self.checkpoint_every or max(1, self.epochs // self.num_checkpoints)


@dataclass(frozen=True)
class ProtectConfig:
    """Everything a protection run needs; built once from the CLI or a recipe.

    epsilon is in 1/255 units (8 → 8/255). `epochs` caps the generator's outer iterations
    (MTL-UE) and `steps` is the per-sample PGD step count (baselines). Defaults are the recipe
    measured to protect `digits` on a 2-core CPU in about 4 minutes (EM base, 8 full passes, lr 2e-3,
    width 16, 10 surrogate steps per pass, no EOT); the paper's scale is base tap, generator_width=64,
    epochs=100, lr 1e-3, augment crop_flip, surrogate ResNet-18 for 60 epochs. `milestones` are the
    generator MultiStepLR epochs, scaled to `epochs` when the cap is shorter than the last one.
    """

    method: str = "mtlue"
    base: str = "em"
    epsilon: float = 8.0
    epochs: int = 8  # paper: up to 100 outer iterations
    batch_size: int = 128
    lr: float = 2e-3  # paper 1e-3 over up to 100 passes; doubled for 8
    weight_decay: float = 1e-4
    milestones: tuple = (60, 80)
    gamma: float = 0.1
    lambda_intra: float = 20.0
    lambda_inter: float = 100.0
    protect_tasks: tuple | None = None  # None = every task
    poison_rate: float = 1.0
    seed: int = 0
    surrogate_path: str | None = None
    generator_path: str | None = None
    surrogate: SurrogateConfig = field(default_factory=SurrogateConfig)
    objective: str = "total"  # baselines: total | dgba
    steps: int | None = None  # baselines: PGD steps (None: the method's published count, em 20 / tap 250 / sep 30)
    step_size: float | None = None  # baselines: 1/255 units; None = method default
    fusion: str = "average"  # class-wise baselines: average | patch
    norm: str | None = None  # class-wise baselines: linf | l2 (None: l2, the LSP/AR papers' budget)
    stop_error: float = 0.01  # EM: stop when poisoned-train error <= this
    surrogate_steps: int = 10  # EM: surrogate mini-batches per outer iteration (paper 2 per ~300-step pass)
    generator_width: int = 16  # stem channels of the generator (paper: 64; 16 keeps CPU runs at minutes)
    generator_stem: str = "auto"  # encoder stem: cifar (3x3) | imagenet (7x7/2 + maxpool) | auto (the source's)
    samples_per_epoch: int = 0  # samples per outer iteration (0 = the whole split, as the paper)
    clamp_gradient: str = "straight_through"  # generator: straight_through | zero (the reference code's)
    augment: str = "none"  # EOT before the surrogate: none (mtlue's victims train unaugmented) | crop | crop_flip (paper)
    clamp_inputs: bool = True  # clip x+δ to [0,1] in training as the stored bytes will be (the paper does not)
    work_dir: str | None = None

    def __post_init__(self):
        if self.base not in BASES:
            raise ConfigError(f"--base {self.base!r}: one of {', '.join(BASES)}")
        if self.objective not in OBJECTIVES:
            raise ConfigError(f"--objective {self.objective!r}: one of {', '.join(OBJECTIVES)}")
        if self.fusion not in FUSIONS:
            raise ConfigError(f"--fusion {self.fusion!r}: one of {', '.join(FUSIONS)}")
        if self.norm is not None and self.norm not in NORMS:
            raise ConfigError(f"--norm {self.norm!r}: one of {', '.join(NORMS)}")
        if self.norm == "l2" and self.method not in CLASSWISE_METHODS:
            raise ConfigError(f"--norm l2 applies to the class-wise baselines ({', '.join(CLASSWISE_METHODS)}); "
                              f"--method {self.method} perturbs within the L∞ ball only")
        if self.steps is not None and self.steps < 1:
            raise ConfigError(f"--steps {self.steps}: must be >= 1")
        if not 0 < self.epsilon <= 255:
            raise ConfigError(f"--epsilon {self.epsilon}: must be in (0, 255] (1/255 units)")
        if not 0.0 <= self.poison_rate <= 1.0:
            raise ConfigError(f"--poison-rate {self.poison_rate}: must be in [0, 1]")
        if self.clamp_gradient not in ("straight_through", "zero"):
            raise ConfigError(f"--clamp-gradient {self.clamp_gradient!r}: one of straight_through, zero")
        if self.generator_stem not in GENERATOR_STEMS:
            raise ConfigError(f"--generator-stem {self.generator_stem!r}: one of {', '.join(GENERATOR_STEMS)}")
        if self.augment not in AUGMENTS:
            raise ConfigError(f"--augment {self.augment!r}: one of {', '.join(AUGMENTS)}")
        if self.epochs < 1:
            raise ConfigError(f"--epochs {self.epochs}: must be >= 1")
        if self.batch_size < 1:
            raise ConfigError(f"--batch-size {self.batch_size}: must be >= 1")

    @property
    def uses_clean_surrogate(self) -> bool:
        """TAP and SEP (MTL-UE bases or per-sample baselines) perturb against a clean surrogate;
        EM trains its own from scratch and the class-wise baselines need none."""
        base = self.base if self.method == "mtlue" else self.method
        return base in ("tap", "sep")

    @property
    def pattern_norm(self) -> str:
        """The class-wise budget in force: --norm, else L2 as the LSP and AR papers use."""
        return self.norm or "l2"

    @property
    def eps(self) -> float:
        """ε as a fraction of the [0, 1] pixel range."""
        return self.epsilon / 255.0

    def scaled_milestones(self) -> list[int]:
        """MultiStepLR milestones in outer iterations: paper's [60, 80] of 100, scaled to a shorter cap."""
        last = max(self.milestones) if self.milestones else 0
        if last < self.epochs:
            return [int(m) for m in self.milestones]
        scale = self.epochs / 100.0
        return sorted({max(1, int(round(m * scale))) for m in self.milestones})

    def to_json(self) -> dict:
        d = asdict(self)
        d["milestones"] = list(self.milestones)
        d["protect_tasks"] = list(self.protect_tasks) if self.protect_tasks is not None else None
        return d

    def with_(self, **changes) -> "ProtectConfig":
        return replace(self, **changes)


class ProtectContext:
    """What a method may use while preparing: the clean train split, tasks, config, device, work dir.

    The clean surrogate and its SEP checkpoints are trained once with `mtlue.train.train_model`
    and cached under `work_dir/surrogate/` so a resumed run reuses them. `on_iteration(t)` is
    called after each finished (and checkpointed) outer iteration; tests raise from it to
    simulate a kill.
    """

    def __init__(self, source: Source, config: ProtectConfig, device: torch.device, work_dir: str | os.PathLike,
                 progress: bool = True, on_iteration: Callable[[int], None] | None = None, split: str = "train"):
        self.source = source
        self.tasks = tuple(source.tasks)
        self.config = config
        self.device = device
        self.work_dir = Path(work_dir)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.progress = progress
        self.on_iteration = on_iteration
        self.split = split
        self._surrogate = None
        self._surrogate_info: dict = {}

    # -- data -------------------------------------------------------------------------------
    def data_identity(self) -> dict:
        """The source's spec and content digest: every cache in work_dir is keyed by it."""
        return self.source.identity()

    @property
    def num_samples(self) -> int:
        return self.source.size(self.split)

    @property
    def protected_tasks(self) -> tuple:
        """Names of the tasks whose labels δ may carry (default: all)."""
        names = [t.name for t in self.tasks]
        wanted = self.config.protect_tasks
        if wanted is None:
            return tuple(names)
        for name in wanted:
            if name not in names:
                raise ConfigError(f"--protect-tasks: no task {name!r} (tasks: {', '.join(names)})")
        return tuple(n for n in names if n in wanted)

    def train_dataset(self):
        return self.source.dataset(self.split)

    def train_loader(self, batch_size: int, shuffle: bool, generator: torch.Generator | None = None,
                     num_samples: int = 0):
        """A torch DataLoader over the clean train split (items: see `mtlue.data.base.item_tensors`).

        With shuffle and 0 < num_samples < N, each pass sees a fresh random subset of num_samples."""
        dataset = self.train_dataset()
        if shuffle and 0 < num_samples < len(dataset):
            sampler = torch.utils.data.RandomSampler(dataset, num_samples=num_samples, generator=generator)
            return torch.utils.data.DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=0)
        return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=shuffle,
                                           generator=generator, num_workers=0, drop_last=False)

    def batches(self, batch_size: int) -> Iterator[Batch]:
        return self.source.batches(self.split, batch_size)

    def iteration_done(self, iteration: int) -> None:
        if self.on_iteration is not None:
            self.on_iteration(iteration)

    # -- surrogate --------------------------------------------------------------------------
    @property
    def surrogate_dir(self) -> Path:
        return self.work_dir / "surrogate"

    def clean_surrogate(self):
        """The clean MTL surrogate (eval mode, frozen): loaded from --surrogate or trained once and cached."""
        from mtlue.protect.surrogate import load_or_train_surrogate

        if self._surrogate is None:
            self._surrogate, self._surrogate_info = load_or_train_surrogate(self)
        return self._surrogate

    def surrogate_ensemble(self) -> list:
        """The SEP ensemble: frozen checkpoints of one clean surrogate run (--surrogate DIR, or trained once)."""
        from mtlue.protect.surrogate import load_ensemble

        models, self._surrogate_info = load_ensemble(self)
        return models

    @property
    def surrogate_info(self) -> dict:
        return dict(self._surrogate_info)


class ProtectionMethod:
    """One unlearnable-example method: prepare once, then hand out δ per batch.

    `perturb` returns float32 (N,H,W,C) δ in [−ε, ε] (fractions of the pixel range) for the
    samples of `batch`, keyed by `batch.index` (never by position in the split).
    """

    name = "base"

    def __init__(self, config: ProtectConfig):
        self.config = config
        self.context: ProtectContext | None = None

    def prepare(self, context: ProtectContext) -> None:
        """Train / optimise whatever the method needs; checkpoint into context.work_dir to resume."""
        self.context = context

    def perturb(self, batch: Batch, device: torch.device) -> np.ndarray:
        raise NotImplementedError

    def record(self) -> dict:
        """Method-specific fields of the protection record in manifest.json."""
        return {}

