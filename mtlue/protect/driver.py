"""Protect a source's train split: prepare a method, stream δ into a store, record the protection.

Stored bytes follow one rule: `round(clip(x·255 + δ·255, 0, 255))` for the poisoned indices
(a seeded random subset of poison_rate·N), the clean bytes for the rest. Every batch is checked
(no NaN, |stored − clean| ≤ ε·255) before it reaches the writer; a violation raises
ProtectionError and the writer removes the partial store.
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from mtlue.data.base import Batch, Source
from mtlue.errors import ConfigError, MtlueError, ProtectionError, StoreError
from mtlue.protect.base import ProtectConfig, ProtectContext
from mtlue.store.layout import dumps_json, write_text_atomic

APPLY_RULE = ("stored = round(clip(x*255 + delta*255, 0, 255)) as uint8 (round half to even), then within "
              "floor(epsilon) of x*255; x, delta in [0,1] units")
DEFAULT_SHARD_SIZE = 2048
RUN_FILE = "protect-run.json"


def default_work_dir(store_dir) -> Path:
    """`STORE.work/` beside the store: generator, surrogate and checkpoints never go inside the release."""
    store = Path(os.fspath(store_dir)).resolve()
    return store.with_name(store.name + ".work")


def apply_perturbation(images: np.ndarray, delta: np.ndarray, epsilon: float | None = None) -> np.ndarray:
    """round(clip(x·255 + δ·255, 0, 255)) as uint8, x uint8 (N,H,W,C), δ float (N,H,W,C) in pixel-range units;
    with `epsilon` (1/255 units), then kept within ⌊ε⌋ of x, so a fractional ε (4.5) never rounds past it."""
    shifted = images.astype(np.float64) + delta.astype(np.float64) * 255.0
    stored = np.rint(np.clip(shifted, 0.0, 255.0))
    if epsilon is not None:
        budget = np.floor(float(epsilon) + 1e-6)
        stored = np.clip(stored, images.astype(np.float64) - budget, images.astype(np.float64) + budget)
    return stored.astype(np.uint8)


def check_protected_batch(clean: np.ndarray, delta: np.ndarray, stored: np.ndarray, epsilon: float, index) -> None:
    """ProtectionError unless δ is finite and every stored pixel is within ε (1/255 units) of the clean one."""
    if not np.all(np.isfinite(delta)):
        bad = np.unique(np.nonzero(~np.isfinite(delta.reshape(len(delta), -1)))[0])
        raise ProtectionError(f"perturbation holds NaN/inf for sample index {int(index[bad[0]])} "
                              f"({len(bad)} samples in this batch); nothing was written")
    # δ itself within ε (a method's bug is an error, never silently clipped); the apply rule only keeps
    # the rounding of a fractional ε from stepping past it
    reach = np.abs(delta.astype(np.float64) * 255.0).reshape(len(delta), -1).max(1) if delta.size else np.zeros(0)
    wide = np.nonzero(reach > epsilon + 1e-3)[0]
    if len(wide):
        raise ProtectionError(f"sample index {int(index[wide[0]])}: the method's δ reaches {reach[wide[0]]:.2f}/255 "
                              f"> ε = {epsilon:g}/255 ({len(wide)} samples in this batch); nothing was written")
    diff = np.abs(stored.astype(np.int16) - clean.astype(np.int16)).reshape(len(stored), -1).max(1)
    over = np.nonzero(diff > epsilon + 1e-6)[0]
    if len(over):
        raise ProtectionError(f"sample index {int(index[over[0]])}: a stored pixel differs from the clean one by "
                              f"{int(diff[over[0]])}/255 > ε = {epsilon:g}/255 ({len(over)} samples in this batch); "
                              "nothing was written")


def poisoned_index_set(source: Source, split: str, rate: float, seed: int) -> np.ndarray | None:
    """Sorted global indices that receive δ (None = all): a seeded draw of round(rate·N) of them."""
    if rate >= 1.0:
        return None
    indices = np.concatenate([b.index for b in source.batches(split, 4096)]) if source.size(split) else np.zeros(0, np.int64)
    count = int(round(rate * len(indices)))
    chosen = np.random.default_rng(seed).choice(len(indices), size=count, replace=False)
    return np.sort(indices[chosen])


def protect_source(source: Source, store_dir, config: ProtectConfig, device: torch.device, work_dir=None,
                   overwrite: bool = False, progress: bool = True, shard_size: int = DEFAULT_SHARD_SIZE,
                   on_iteration: Callable[[int], None] | None = None, method=None, dist=None) -> dict:
    """Run `config.method` on the train split of `source` and write the protected store; returns the manifest.

    Resumes: the method reloads its last checkpoint from `work_dir`, and finished shards of an
    interrupted run with the same settings are kept. `method` overrides the registry (tests).
    Under torchrun (`dist`, a mtlue.distributed.DistContext of several processes) rank 0 prepares the
    method first and the others load what it wrote to `work_dir`; each rank writes the shards with
    shard_id % world_size == rank, and rank 0 writes the VDS and the manifest last, after a barrier.
    """
    from mtlue.distributed import DistContext
    from mtlue.store.recovery import recover_interrupted_overwrite
    from mtlue.store.writer import check_output_dir, store_entries

    dist = dist if dist is not None else DistContext.single(device)
    store_dir = Path(os.fspath(store_dir))
    source.check_split("train")
    if dist.is_main:
        recover_interrupted_overwrite(store_dir)  # a killed --overwrite: the old store back, before it is judged
    dist.barrier()
    if (store_dir / "manifest.json").is_file() and not overwrite:
        raise StoreError(f"{store_dir}: a complete store is already there; pass --overwrite to replace it")
    work_dir = Path(work_dir) if work_dir else default_work_dir(store_dir)
    if _inside(work_dir, store_dir):
        raise ConfigError(f"--work-dir {work_dir}: must not lie inside the store {store_dir} (the release)")
    if config.work_dir is None:
        config = config.with_(work_dir=str(work_dir))
    check_output_dir(store_dir, overwrite)  # refused now, not after the generator has trained
    if store_dir.is_dir() and any(store_dir.iterdir()) and not (store_dir / "manifest.json").is_file():
        store_entries(str(store_dir))  # an interrupted store may be resumed; a folder of other files never is
    created_work_dir = not work_dir.exists()
    try:
        dist.barrier()  # every rank has judged the output directory before rank 0 writes to it
        return _protect(source, store_dir, config, device, work_dir, overwrite, progress, shard_size, on_iteration,
                        method, dist)
    except MtlueError:
        if created_work_dir and dist.is_main:
            remove_empty_tree(work_dir)  # a refused run leaves no empty STORE.work/ behind
        raise


def remove_empty_tree(path: Path) -> None:
    """Remove `path` if it holds directories only (no file anywhere below it)."""
    if not path.is_dir() or path.is_symlink():
        return
    for root, dirs, files in os.walk(path, topdown=False):
        if files or any(os.path.islink(os.path.join(root, d)) for d in dirs):
            return
    for root, _, _ in os.walk(path, topdown=False):
        os.rmdir(root)


def _protect(source, store_dir: Path, config: ProtectConfig, device, work_dir: Path, overwrite: bool, progress: bool,
             shard_size: int, on_iteration, method, dist) -> dict:
    from mtlue.protect import build_method
    from mtlue.store.writer import StoreWriter

    method = method if method is not None else build_method(config)
    context = ProtectContext(source, config, device, work_dir, progress=progress, on_iteration=on_iteration, dist=dist)
    prepare_method(method, context, dist)
    record = protection_record(config, method, context, dist)

    poisoned = poisoned_index_set(source, "train", config.poison_rate, config.seed)
    record["poisoned_indices"] = "all" if poisoned is None else poisoned.tolist()
    # the shards do not depend on the world size, so a run resumes under another one
    run_key = {"record": {k: v for k, v in record.items() if k not in ("software", "surrogate", "distributed", "world_size",
                                                                  "world_size_x_batch")},
               "shard_size": shard_size, "source": source.identity(), "count": source.size("train")}
    run_key = json.loads(json.dumps(run_key))
    resume = False
    if dist.is_main:
        run_path = work_dir / RUN_FILE
        partial = store_dir.is_dir() and any(store_dir.iterdir()) and not (store_dir / "manifest.json").is_file()
        resume = partial and run_path.is_file() and json.loads(run_path.read_text()) == run_key
        if partial and not resume and not overwrite:
            raise StoreError(f"{store_dir}: holds an unfinished store from a run with other settings; pass --overwrite")
        write_text_atomic(str(run_path), dumps_json(run_key))

    def make_batches(start: int, stop: int):
        # batches start at each shard's first position, so their boundaries do not depend on the world size
        for batch in source.batches("train", config.batch_size, start, stop):
            yield protect_batch(batch, method, config, poisoned, device)

    if dist.is_main:
        writer = StoreWriter(store_dir, source.tasks, source.image_shape, overwrite=overwrite and not resume,
                             resume=resume)
        dist.broadcast_object(writer.write_dir)
    else:  # rank 0 has prepared the directory (and removed stale files): write into it
        writer = StoreWriter.joining(dist.broadcast_object(None), source.tasks, source.image_shape)
    with writer:
        writer.write_split("train", source.size("train"), shard_size, make_batches, progress=progress, dist=dist)
        manifest = None
        if dist.is_main:
            origin = {**source.origin_record(), "image_shape": list(source.image_shape)}
            manifest = writer.finish(protection=record, extra={"source": origin})
    dist.barrier()  # the manifest is in place
    if manifest is None:
        manifest = json.loads((store_dir / "manifest.json").read_text())
    return manifest


def prepare_method(method, context: ProtectContext, dist) -> None:
    """`method.prepare(context)`; under torchrun every rank together for a method that trains data-parallel
    (`prepares_together`: MTL-UE's generator), else rank 0 first and then the others, which load what it
    checkpointed in the work directory."""
    if getattr(method, "prepares_together", False):
        method.prepare(context)
    else:
        dist.main_first(lambda: method.prepare(context))


def protect_batch(batch: Batch, method, config: ProtectConfig, poisoned: np.ndarray | None, device) -> Batch:
    """The stored Batch for one clean Batch: apply δ to the poisoned samples, check the budget."""
    if poisoned is None:
        chosen = np.ones(len(batch), dtype=bool)
    else:
        chosen = np.isin(batch.index, poisoned)
    delta = np.zeros(batch.images.shape, dtype=np.float32)
    if chosen.any():
        produced = np.asarray(method.perturb(batch, device), dtype=np.float32)
        if produced.shape != batch.images.shape:
            raise ProtectionError(f"method {config.method!r} returned δ of shape {produced.shape} for images "
                                  f"{batch.images.shape}; nothing was written")
        delta[chosen] = produced[chosen]
    with np.errstate(invalid="ignore"):  # NaN is reported by the check below, not as a cast warning
        stored = apply_perturbation(batch.images, delta, config.epsilon)
    check_protected_batch(batch.images, delta, stored, config.epsilon, batch.index)
    return Batch(batch.index, stored, batch.labels, batch.masks)


def protection_record(config: ProtectConfig, method, context: ProtectContext, dist=None) -> dict:
    """The manifest's `protection` block (JSON-able): the shared settings, the method's own settings
    (`config` holds both, nothing of other methods) and what the method reports."""
    settings = config.settings
    record = {"method": config.method}
    if config.method == "mtlue":
        record["base"] = settings.base
    record.update({
        "epsilon": config.epsilon,
        "epsilon_units": "1/255",
        "norm": settings.budget_norm,
        "apply_rule": APPLY_RULE,
        "seed": config.seed,
        "poison_rate": config.poison_rate,
        "protected_tasks": list(context.protected_tasks),
        "split": "train",
        "world_size": 1,
        "batch_size": config.batch_size,
        "world_size_x_batch": f"1 x {config.batch_size}",
    })
    if dist is not None and dist.distributed:
        record["distributed"] = {**dist.record(), "shard_owner": "shard_id % world_size"}
    if settings.uses_surrogate:
        record["surrogate"] = context.surrogate_info or _surrogate_settings(config)
    record["config"] = {k: v for k, v in config.to_json().items() if k != "work_dir"}  # the owner's machine, not the data's
    record["software"] = _software()
    record.update(method.record())
    trained = record.get("generator_distributed")
    if trained:  # world size x per-process batch of the generator's training (its global batch is batch_size)
        record["world_size"] = trained["world_size"]
        record["world_size_x_batch"] = f"{trained['world_size']} x {trained['per_rank_batch']}"
    return json.loads(json.dumps(record, default=str))


def _surrogate_settings(config: ProtectConfig) -> dict:
    settings = config.surrogate
    info = {"backbone": settings.backbone, "epochs": settings.epochs, "batch_size": settings.batch_size}
    if config.method == "mtlue" and config.settings.base == "em":
        info["source"] = "trained from scratch alternately with the generator (EM)"
    if getattr(config.settings, "surrogate_path", None):
        info["path"] = config.settings.surrogate_path
    return info


def _software() -> dict:
    import kornia
    import torchvision

    return {"torch": torch.__version__, "torchvision": torchvision.__version__, "kornia": kornia.__version__,
            "numpy": np.__version__, "python": platform.python_version()}


def _inside(path: Path, parent: Path) -> bool:
    try:
        Path(path).resolve().relative_to(Path(parent).resolve())
        return True
    except ValueError:
        return False
