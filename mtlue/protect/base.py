"""The ProtectionMethod interface and the shared run context (configuration: mtlue.protect.config).

A method turns a multi-task train split into per-sample perturbations δ with ‖δ‖∞ ≤ ε
(ε in 1/255 units in the config). The driver asks it for δ batch by batch and writes
`round(clip(x·255 + δ·255, 0, 255))` into the store.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from mtlue.data.base import Batch, Source
from mtlue.errors import ConfigError
from mtlue.protect.config import ProtectConfig


class ProtectContext:
    """What a method may use while preparing: the clean train split, tasks, config, device, work dir.

    The clean surrogate and its SEP checkpoints are trained once with `mtlue.train.train_model`
    and cached under `work_dir/surrogate/` so a resumed run reuses them. `on_iteration(t)` is
    called after each finished (and checkpointed) outer iteration; tests raise from it to
    simulate a kill.
    """

    def __init__(self, source: Source, config: ProtectConfig, device: torch.device, work_dir: str | os.PathLike,
                 progress: bool = True, on_iteration: Callable[[int], None] | None = None, split: str = "train",
                 dist=None):
        self.source = source
        self.dist = dist if dist is not None and dist.distributed else None  # a DistContext under torchrun
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
        self._train_mean_depths = None

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

    def train_mean_depths(self) -> dict:
        """{depth task: mean depth over the valid train pixels} (`mtlue.train.fit_dense_chance`), one label
        pass per context."""
        if self._train_mean_depths is None:
            from mtlue.train import fit_dense_chance

            depth_tasks = [t for t in self.tasks if t.kind == "depth"]
            fits = fit_dense_chance(self.train_dataset(), depth_tasks, 0, self.device) if depth_tasks else {}
            self._train_mean_depths = {name: float(fit.split_value()[0]) for name, fit in fits.items()}
        return self._train_mean_depths

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
            self._surrogate, self._surrogate_info = self._rank0_first(lambda: load_or_train_surrogate(self))
        return self._surrogate

    def surrogate_ensemble(self) -> list:
        """The SEP ensemble: frozen checkpoints of one clean surrogate run (--surrogate DIR, or trained once)."""
        from mtlue.protect.surrogate import load_ensemble

        models, self._surrogate_info = self._rank0_first(lambda: load_ensemble(self))
        return models

    def _rank0_first(self, make):
        """`make()` on rank 0 first (it trains and caches in work_dir), then on the others (they load the cache)."""
        return make() if self.dist is None else self.dist.main_first(make)

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
        self.settings = config.settings  # this method's own config (mtlue.protect.config)
        self.context: ProtectContext | None = None

    def prepare(self, context: ProtectContext) -> None:
        """Train / optimise whatever the method needs; checkpoint into context.work_dir to resume."""
        self.context = context

    def perturb(self, batch: Batch, device: torch.device) -> np.ndarray:
        raise NotImplementedError

    def record(self) -> dict:
        """Method-specific fields of the protection record in manifest.json."""
        return {}


def stop_report(history: list, cap: int) -> dict:
    """How an EM loop ended (the MTL-UE generator's records in `history`): the stop rule met (poisoned-train
    error ≤ stop_error), or the cap hit first; with the error after every outer iteration."""
    errors = [h.get("poisoned_train_error") for h in history if isinstance(h.get("poisoned_train_error"), float)]
    met = bool(history and history[-1].get("stop"))
    return {"stopped_by": "stop_rule" if met else ("cap" if len(history) >= cap else "unfinished"),
            "poisoned_error_curve": errors}
