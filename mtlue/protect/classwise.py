"""Class-wise perturbations for multi-task labels: per-(task, class) pattern tables, fusion, budget scaling.

A table holds one unit-L2 pattern per class of every classification task (binary tasks: 2).
A sample's δ depends only on its label vector: the K task patterns it selects are fused
(MTL-UE reference code, `classwise_spatial_K` / `classwise_patch_K`) and then scaled to the budget:

- average: p = (1/K) Σ_k P_k[y_k]
- patch:   an N×N grid, N = 2^⌈log2⌈√K⌉⌉; cell k (row-major) holds `P_k[y_k][::N, ::N]` cropped to the
           cell (⌊H/N⌋ × ⌊W/N⌋); empty cells and the remainder rows/columns are zero.

A missing label (mask False) contributes zero; a task outside --protect-tasks contributes the mean
of its class patterns (it carries no label information). Budget: `linf` scales p so max|δ| = ε;
`l2` scales p to a target L2 norm and then clips δ to [−ε, ε] per pixel, because the store enforces
every pixel within ε (so an L2 target larger than the L∞ ball is partly clipped away).
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numpy as np

from mtlue.errors import ProtectionError
from mtlue.protect.base import ProtectionMethod, ProtectContext
from mtlue.store.layout import fsync_replace

MEASURE_BATCH = 1024  # samples per chunk when measuring the budget over the train split


def fusion_grid_size(num_tasks: int) -> int:
    """N = 2^⌈log2⌈√K⌉⌉: the side of the patch-fusion grid for K task patterns."""
    if num_tasks < 1:
        raise ProtectionError("patch fusion needs at least one classification task")
    side = math.ceil(math.sqrt(num_tasks))
    return 1 << math.ceil(math.log2(side)) if side > 1 else 1


def unit_l2(patterns: np.ndarray) -> np.ndarray:
    """Each pattern (first axis) divided by its L2 norm (all-zero patterns stay zero)."""
    flat = patterns.reshape(len(patterns), -1).astype(np.float64)
    norms = np.linalg.norm(flat, axis=1, keepdims=True)
    return (flat / np.where(norms > 0, norms, 1.0)).reshape(patterns.shape).astype(np.float32)


class PatternTable:
    """Per-(task, class) patterns: `patterns[task]` is float32 (C_task, H, W, channels), each of unit L2."""

    def __init__(self, patterns: dict, image_shape: tuple):
        self.patterns = {name: np.ascontiguousarray(p, dtype=np.float32) for name, p in patterns.items()}
        self.image_shape = tuple(int(v) for v in image_shape)
        for name, p in self.patterns.items():
            if p.ndim != 4 or tuple(p.shape[1:]) != self.image_shape:
                raise ProtectionError(f"pattern table: task {name!r} holds shape {p.shape}, "
                                      f"expected (classes, {', '.join(map(str, self.image_shape))})")

    @property
    def task_names(self) -> tuple:
        return tuple(self.patterns)

    def sha256(self) -> str:
        """Digest over task names, shapes and float32 bytes in task order."""
        digest = hashlib.sha256()
        for name, p in self.patterns.items():
            digest.update(f"{name}:{p.shape}".encode())
            digest.update(np.ascontiguousarray(p, dtype="<f4").tobytes())
        return digest.hexdigest()

    def task_patterns(self, name: str, labels: np.ndarray, masks: np.ndarray, protected: bool) -> np.ndarray:
        """(N,H,W,C) pattern of task `name` per sample: its class pattern, class mean if unprotected, 0 if missing."""
        table = self.patterns[name]
        count = len(labels)
        present = np.asarray(masks, dtype=bool).reshape(count)
        if not protected:
            chosen = np.broadcast_to(table.mean(axis=0), (count,) + self.image_shape).copy()
        else:
            chosen = table[self.class_indices(name, labels, present)]
        chosen[~present] = 0.0
        return chosen

    def class_indices(self, name: str, labels: np.ndarray, present: np.ndarray) -> np.ndarray:
        """Each sample's class of task `name` (0 where its label is missing); ProtectionError naming the task
        and batch position of a label outside the table."""
        count = len(labels)
        classes = np.rint(np.asarray(labels, dtype=np.float64)).astype(np.int64).reshape(count)
        bad = present & ((classes < 0) | (classes >= len(self.patterns[name])))
        if bad.any():
            where = int(np.nonzero(bad)[0][0])
            raise ProtectionError(f"task {name!r}: label {int(classes[where])} at batch position {where} is "
                                  f"outside 0..{len(self.patterns[name]) - 1}")
        return np.where(present, classes, 0)

    def fuse(self, labels: dict, masks: dict, fusion: str, protected: tuple, owner: np.ndarray | None = None) -> np.ndarray:
        """Fused pattern (N,H,W,C) float32 for label/mask arrays keyed by task name (see module doc)."""
        chosen = {name: self.task_patterns(name, labels[name], masks[name], name in protected)
                  for name in self.task_names}
        return fuse_patterns(chosen, self.image_shape, fusion, protected, owner)


def fuse_patterns(chosen: dict, image_shape: tuple, fusion: str, protected: tuple,
                  owner: np.ndarray | None = None) -> np.ndarray:
    """Fuse each task's per-sample patterns (name -> (N,H,W,C), in task order) as `fusion` says (module doc)."""
    names = tuple(chosen)
    count = len(next(iter(chosen.values())))
    height, width, channels = image_shape
    fused = np.zeros((count, height, width, channels), dtype=np.float32)
    if fusion == "average":
        for name in names:
            fused += chosen[name]
        return fused / len(names)
    if fusion == "patch":
        side = fusion_grid_size(len(names))
        cell_h, cell_w = height // side, width // side
        if cell_h < 1 or cell_w < 1:
            raise ProtectionError(f"--fusion patch: a {side}x{side} grid does not fit a {height}x{width} image")
        for k, name in enumerate(names):
            row, col = divmod(k, side)
            cell = chosen[name][:, ::side, ::side][:, :cell_h, :cell_w]
            fused[:, row * cell_h:(row + 1) * cell_h, col * cell_w:(col + 1) * cell_w] = cell
        return fused
    if fusion == "interleave":
        if owner is None:
            raise ProtectionError("--fusion interleave: no ownership map (the method did not build one)")
        for k, name in enumerate(names):
            if name in protected:
                fused += np.where(owner[None, :, :, None] == k, chosen[name], 0.0)
        return fused
    raise ProtectionError(f"--fusion {fusion!r}: one of average, patch, interleave")


def interleave_owner(names: tuple, protected: tuple, image_shape: tuple, period: int,
                     rng: np.random.Generator) -> np.ndarray:
    """(H, W) int: the index in `names` of the task owning each pixel; a period×period tile whose positions are
    shared among the protected tasks as evenly as possible (seeded order), repeated over the image."""
    chosen = [k for k, name in enumerate(names) if name in protected]
    if not chosen:
        raise ProtectionError("--fusion interleave: no protected classification task to give pixels to")
    height, width = image_shape[:2]
    cells = period * period
    tile = np.array([chosen[i % len(chosen)] for i in range(cells)], dtype=np.int64)[rng.permutation(cells)]
    tile = tile.reshape(period, period)
    return np.tile(tile, (-(-height // period), -(-width // period)))[:height, :width]


def scale_to_budget(pattern: np.ndarray, norm: str, eps: float, target_l2: float) -> np.ndarray:
    """δ from fused patterns (N,H,W,C): linf → max|δ| = ε; l2 → ‖δ‖₂ = target_l2, then clipped to [−ε, ε]."""
    flat = pattern.reshape(len(pattern), -1).astype(np.float64)
    if norm == "linf":
        size = np.abs(flat).max(axis=1, keepdims=True) if flat.size else np.zeros((len(flat), 1))
        scaled = flat * (eps / np.where(size > 0, size, 1.0))
    elif norm == "l2":
        size = np.linalg.norm(flat, axis=1, keepdims=True)
        scaled = flat * (target_l2 / np.where(size > 0, size, 1.0))
    else:
        raise ProtectionError(f"--norm {norm!r}: one of linf, l2")
    eps32 = np.float32(eps)
    return np.clip(scaled.astype(np.float32), -eps32, eps32).reshape(pattern.shape)


def classification_tasks(tasks) -> tuple:
    """The tasks a class-wise table covers (binary and multiclass); ProtectionError when there are none."""
    chosen = tuple(t for t in tasks if t.kind in ("binary", "multiclass"))
    if not chosen:
        raise ProtectionError("class-wise methods need at least one binary or multiclass task "
                              f"(tasks: {', '.join(f'{t.name} ({t.kind})' for t in tasks)})")
    return chosen


class ClasswiseMethod(ProtectionMethod):
    """Shared driver of LSP and AR: build a table in `prepare`, fuse + scale per batch in `perturb`.

    Subclasses implement `build_patterns(task, position, image_shape) -> (classes, H, W, C)` and
    `default_l2(image_shape)` (the paper's L2 target on the [0, 1] scale)."""

    name = "classwise"
    l2_rule = ""  # one line for the record: how the L2 target follows from the image size

    def __init__(self, config):
        super().__init__(config)
        self.table: PatternTable | None = None
        self.owner: np.ndarray | None = None  # interleave fusion: the task index owning each pixel
        self.protected: tuple = ()
        self.budget: dict = {}

    def build_patterns(self, task, position: int, image_shape: tuple) -> np.ndarray:
        raise NotImplementedError

    def default_l2(self, image_shape: tuple) -> float:
        raise NotImplementedError

    def method_fields(self) -> dict:
        return {}

    def task_generator(self, position: int) -> np.random.Generator:
        """A generator for the task at `position` in the source: depends on seed, method and position only."""
        tag = int.from_bytes(hashlib.sha256(self.name.encode()).digest()[:4], "little")
        return np.random.default_rng([int(self.config.seed), tag, position])

    @property
    def target_l2(self) -> float:
        return self.default_l2(self.context.source.image_shape)

    def prepare(self, context: ProtectContext) -> None:
        super().prepare(context)
        image_shape = tuple(context.source.image_shape)
        tasks = classification_tasks(context.tasks)
        positions = {t.name: i for i, t in enumerate(context.tasks)}
        self.table = PatternTable({t.name: self.build_patterns(t, positions[t.name], image_shape) for t in tasks},
                                  image_shape)
        self.protected = tuple(n for n in context.protected_tasks if n in self.table.patterns)
        if self.settings.fusion == "interleave":
            self.owner = interleave_owner(self.table.task_names, self.protected, image_shape, self.settings.period,
                                          self.task_generator(len(context.tasks)))
        self.save_table(context.work_dir / f"{self.name}_patterns.npz")
        self.budget = self.measure_budget()

    def save_table(self, path: Path) -> None:
        """The pattern table as .npz (one array per task) beside the run, written atomically (tmp + rename)."""
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as fh:
            np.savez(fh, **self.table.patterns)
        fsync_replace(str(tmp), str(path))

    def delta_for(self, labels: dict, masks: dict, index: np.ndarray | None = None) -> np.ndarray:
        """δ per sample; `index` (the samples' global ids) matters only to methods that draw per sample (AR)."""
        fused = self.table.fuse(labels, masks, self.settings.fusion, self.protected, self.owner)
        return scale_to_budget(fused, self.settings.pattern_norm, self.config.eps, self.target_l2)

    def perturb(self, batch, device) -> np.ndarray:
        if self.table is None:
            raise ProtectionError(f"method {self.name!r}: perturb called before prepare")
        names = self.table.task_names
        return self.delta_for({n: batch.labels[n] for n in names}, {n: batch.masks[n] for n in names},
                              np.asarray(batch.index))

    def measure_budget(self) -> dict:
        """Mean / min / max L2 of δ and the share of clipped pixels over the train split's label vectors."""
        names = self.table.task_names
        arrays = {n: self.context.source.label_array(self.context.split, n) for n in names}
        count = len(arrays[names[0]][0]) if names else 0
        index = self.context.source.index_array(self.context.split)
        l2, clipped, pixels = [], 0, 0
        eps = np.float32(self.config.eps)
        for lo in range(0, count, MEASURE_BATCH):
            hi = min(lo + MEASURE_BATCH, count)
            delta = self.delta_for({n: arrays[n][0][lo:hi] for n in names}, {n: arrays[n][1][lo:hi] for n in names},
                                   index[lo:hi])
            flat = delta.reshape(hi - lo, -1)
            l2.append(np.linalg.norm(flat.astype(np.float64), axis=1))
            clipped += int(np.count_nonzero(np.abs(flat) >= eps))
            pixels += flat.size
        l2 = np.concatenate(l2) if l2 else np.zeros(0)
        return {"measured_l2_mean": float(l2.mean()) if len(l2) else 0.0,
                "measured_l2_min": float(l2.min()) if len(l2) else 0.0,
                "measured_l2_max": float(l2.max()) if len(l2) else 0.0,
                "pixels_at_epsilon_fraction": clipped / pixels if pixels else 0.0,
                "measured_over": f"{count} train samples ({self.context.split}), all label vectors"}

    def record(self) -> dict:
        cfg, settings = self.config, self.settings
        info = {
            "norm": settings.pattern_norm,
            "fusion": settings.fusion,
            "seed": cfg.seed,
            "pattern_tasks": list(self.table.task_names) if self.table else [],
            "pattern_classes": {n: int(len(p)) for n, p in self.table.patterns.items()} if self.table else {},
            "pattern_table_sha256": self.table.sha256() if self.table else None,
            "pattern_protected_tasks": list(self.protected),
            "unprotected_task_rule": "mean of the task's class patterns",
            "missing_label_rule": "zero pattern",
            "target_l2": self.target_l2 if settings.pattern_norm == "l2" else None,
            "target_l2_rule": self.l2_rule if settings.pattern_norm == "l2" else None,
            "target_linf": cfg.eps,
            "l2_then_linf_clip": settings.pattern_norm == "l2",
        }
        if settings.fusion == "patch" and self.table:
            info["fusion_grid"] = fusion_grid_size(len(self.table.task_names))
        if settings.fusion == "interleave" and self.owner is not None:
            info["interleave_period"] = settings.period
            info["interleave_pixels"] = {n: int((self.owner == k).sum()) for k, n in enumerate(self.table.task_names)}
        info.update(self.method_fields())
        info.update(self.budget)
        return info
