"""MTL-UE: train the label-conditioned generator over an EM / TAP / SEP base loss, then emit δ = G(x, y).

Yu et al., ICML 2025, Algorithm 1 as the released code runs it: per outer iteration one pass of
generator steps minimising Σ_m [L_b(F_m(aug(x + G(x,y))), y) + λ_intra·L_intra + λ_inter·L_inter]
over the M surrogates (EM, TAP: M = 1; SEP: its checkpoints, so the regulariser weighs M times)
(Adam 1e-3, wd 1e-4, MultiStepLR), then (EM only) a few surrogate steps on the poisoned batch
and a stop test on the poisoned-train error. Every outer iteration is checkpointed atomically.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import torch

from mtlue.data.base import Batch, batch_tensors, item_tensors
from mtlue.distributed_training import DataParallel
from mtlue.errors import ConfigError
from mtlue.models.generator import build_generator, load_generator, resolve_stem, save_generator
from mtlue.models.mtl import atomic_torch_save, checkpoint_errors, load_torch_file
from mtlue.protect.base import stop_report, ProtectionMethod, ProtectContext
from mtlue.dense_augment import LabelAwareEOT, has_dense_tasks
from mtlue.protect.eot import augmented, make_augment, resolve_augment, robust_eot  # noqa: F401 (resolve_augment re-exported)
from mtlue.protect.objectives import base_loss
from mtlue.protect.robust import RULES as ROBUST_RULES
from mtlue.protect.robust import check_robust_for
from mtlue.protect.regularisers import embedding_regulariser, inter_task_loss, intra_task_loss
from mtlue.protect.surrogate import (DENSE_ERROR_RULES, EM_SURROGATE_RULES, PoisonedError, freeze, fresh_surrogate,
                                    restart_surrogate, train_on_poisoned)

STATE_FILE = "generator-state.pt"
GENERATOR_FILE = "generator.pt"
# Rules of the training loop that earlier versions ran otherwise; a state saved under others is retrained.
LOOP_RULES = {"regulariser": "once per surrogate (SEP: per ensemble member)", "em_surrogate": EM_SURROGATE_RULES}
# ... and what datasets with dense tasks add (their resume keys only)
DENSE_RULES = {"embedding": "label-map module, no regulariser", "eot": "label-aware (mtlue.dense_augment)",
               "stop_error": DENSE_ERROR_RULES, "surrogate_depth_heads": "start at the train-mean depth"}
REGULARISER_NOTE = ("λ_intra·L_intra + λ_inter·L_inter is added to the base loss of each of the regulariser_scale "
                    "surrogates (SEP: its checkpoints, as the reference backpropagates it with every checkpoint), "
                    "so the effective weights are regulariser_scale × λ")


class MTLUEMethod(ProtectionMethod):
    """The MTL-UE generator method (`--method mtlue --base em|tap|sep`)."""

    name = "mtlue"
    prepares_together = True  # under torchrun every rank trains the generator (exact data parallelism)

    def __init__(self, config):
        super().__init__(config)
        self.generator = None
        self.history: list[dict] = []
        self.generator_sha256 = None
        self.stem = None  # "cifar" | "imagenet", resolved from --generator-stem and the source
        self.regulariser_scale = None  # surrogates the regulariser is added for (SEP: ensemble size)
        self.parallel = None  # mtlue.distributed_training.DataParallel while training under torchrun
        self.parallel_record = None  # its world size, global / per-rank batch, BatchNorm sync mode
        self.surrogate_parallel = None  # the same for EM's trained surrogate
        self.robust = None  # RobustEOT: the defenses drawn in the generator's loop (--robust), None without

    # -- preparation ------------------------------------------------------------------------
    def prepare(self, context: ProtectContext) -> None:
        super().prepare(context)
        cfg, device = self.settings, context.device
        self.protected = context.protected_tasks
        self.stem = resolve_stem(cfg.generator_stem, context.source)
        check_robust_for(cfg.robust, context.source.image_shape[2], context.tasks)
        final_path = context.work_dir / GENERATOR_FILE
        if cfg.generator_path:
            path = Path(cfg.generator_path)
            if not path.is_file():
                raise ConfigError(f"--generator {path}: no such file")
            self.generator, meta = load_generator(path, device)
            self._check_generator(path)
            self.stem = self.generator.stem
            self.history = meta.get("history", [])
            self.regulariser_scale = meta.get("regulariser_scale")
            self.parallel_record = meta.get("distributed")
        else:
            saved, meta = load_generator(final_path, device) if final_path.is_file() else (None, {})
            if saved is not None and self._finished_with_these_settings(meta):
                self.generator, self.history = saved, meta.get("history", [])
                self.regulariser_scale = meta.get("regulariser_scale")
                self.parallel_record = meta.get("distributed")
            else:
                self._train(context)
                if _is_main(context):  # the other ranks hold the same generator in memory
                    meta = {"history": self.history, "fingerprint": self._fingerprint(),
                            "regulariser_scale": self.regulariser_scale}
                    if self.parallel_record is not None:
                        meta["distributed"] = self.parallel_record
                    save_generator(self.generator, final_path, meta)
        self.generator.eval()
        self.generator_sha256 = weights_sha256(self.generator)

    def _fingerprint(self) -> dict:
        """What a saved generator state must match to be resumed or reused: the resume settings (the stem
        as resolved, never "auto"; not the epoch cap), the LR schedule actually in force (it depends on
        the cap), the loop's rules and the data it was trained on."""
        key = self.config.resume_settings()
        rules = {**LOOP_RULES, "dense": DENSE_RULES} if has_dense_tasks(self.context.tasks) else LOOP_RULES
        if self.settings.robust:  # the EOT draw's rules join the key only for a robust run
            rules = {**rules, "robust": ROBUST_RULES}
        key.update(generator_stem=self.stem, schedule=self.settings.scaled_milestones(), rules=rules,
                   data=self.context.data_identity())
        return json.loads(json.dumps(key))

    def _finished_with_these_settings(self, meta: dict) -> bool:
        """A saved final generator is reused when it was trained with these settings to its end."""
        history = meta.get("history", [])
        finished = len(history) == self.settings.epochs or bool(history and history[-1].get("stop"))
        return meta.get("fingerprint") == self._fingerprint() and finished

    def _check_generator(self, path: Path) -> None:
        names = [t.name for t in self.generator.tasks]
        if names != [t.name for t in self.context.tasks] or tuple(self.generator.image_shape) != tuple(self.context.source.image_shape):
            raise ConfigError(f"--generator {path}: built for tasks {names} and images {self.generator.image_shape}, "
                              f"not this source's")
        if abs(self.generator.epsilon - self.config.eps) > 1e-9:
            raise ConfigError(f"--generator {path}: its ε is {self.generator.epsilon * 255:g}/255, not --epsilon {self.config.epsilon:g}")
        requested = self.settings.generator_stem
        if requested != "auto" and self.generator.stem != requested:
            raise ConfigError(f"--generator {path}: built with the {self.generator.stem} stem, "
                              f"not --generator-stem {requested}")

    def _train(self, context: ProtectContext) -> None:
        cfg, device = self.settings, context.device
        torch.manual_seed(self.config.seed)
        generator = build_generator(context.tasks, context.source.image_shape, self.config.eps, self.stem,
                                    width=cfg.generator_width).to(device)
        generator.straight_through = cfg.clamp_gradient == "straight_through"
        self.parallel = DataParallel.of(context.dist, generator, None, self.config.batch_size)
        self.parallel_record = self.parallel.record() if self.parallel is not None else None
        optimiser = torch.optim.Adam(generator.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        scheduler = torch.optim.lr_scheduler.MultiStepLR(optimiser, cfg.scaled_milestones(), cfg.gamma)
        surrogates, surrogate_optimiser = self._surrogates(context)
        # EM's trained surrogate: data-parallel too (its BatchNorm on global-batch statistics)
        self.surrogate_parallel = (DataParallel.of(context.dist, surrogates[0], None, self.config.batch_size)
                                   if surrogate_optimiser is not None else None)
        self.regulariser_scale = len(surrogates)
        kind, shape = resolve_augment(cfg.augment, context.tasks), context.source.image_shape
        augment = (LabelAwareEOT(kind, shape, context.tasks) if has_dense_tasks(context.tasks)
                   else make_augment(kind, shape)).to(device)
        self.robust = robust_eot(cfg.robust, self.config.eps)

        state_path = context.work_dir / STATE_FILE
        start = 0
        if state_path.is_file():
            blob = load_torch_file(state_path, map_location=device)
            with checkpoint_errors(state_path):
                check_global_batch(blob["fingerprint"], self._fingerprint(), state_path)
                if blob["fingerprint"] == self._fingerprint():
                    generator.load_state_dict(blob["generator"])
                    optimiser.load_state_dict(blob["optimiser"])
                    scheduler.load_state_dict(scheduler_state_from_file(blob["scheduler"]))
                    if surrogate_optimiser is not None:
                        surrogates[0].load_state_dict(blob["surrogate"])
                        surrogate_optimiser.load_state_dict(blob["surrogate_optimiser"])
                    self.history = list(blob["history"])
                    start = int(blob["iteration"])
        self.generator = generator
        for iteration in range(start, cfg.epochs):
            if self.history and self.history[-1].get("stop"):
                break
            record = self._outer_iteration(iteration, generator, optimiser, surrogates, surrogate_optimiser, augment)
            scheduler.step()
            self.history.append(record)
            if not _is_main(context):
                context.iteration_done(iteration + 1)
                continue
            atomic_torch_save({"fingerprint": self._fingerprint(), "iteration": iteration + 1,
                               "generator": generator.state_dict(), "optimiser": optimiser.state_dict(),
                               "scheduler": scheduler_state_for_file(scheduler),
                               "surrogate": surrogates[0].state_dict() if surrogate_optimiser is not None else None,
                               "surrogate_optimiser": surrogate_optimiser.state_dict() if surrogate_optimiser else None,
                               "history": self.history, "torch_rng": torch.get_rng_state()}, state_path)
            if context.progress:
                print(f"[protect] generator {iteration + 1}/{cfg.epochs}: " +
                      " ".join(f"{k}={v:.4g}" for k, v in record.items() if isinstance(v, float)), flush=True)
            context.iteration_done(iteration + 1)
        ended = stop_report(self.history, cfg.epochs)
        if cfg.base == "em" and ended["stopped_by"] == "cap" and ended["poisoned_error_curve"]:
            print(f"[protect] generator: stopped at the cap of {cfg.epochs} passes with poisoned-train error "
                  f"{ended['poisoned_error_curve'][-1]:.4g} > stop_error {cfg.stop_error:g} (the EM stop rule was "
                  f"not met; --epochs raises the cap and resumes)", flush=True)

    def _surrogates(self, context):
        """EM: a fresh trainable model (+ its optimiser); TAP: [clean surrogate]; SEP: its checkpoints."""
        cfg = self.settings
        if cfg.base == "tap":
            return [context.clean_surrogate()], None
        if cfg.base == "sep":
            return context.surrogate_ensemble(), None
        model, optimiser = fresh_surrogate(context, self.config.seed + 1)
        return [model], optimiser

    def _outer_iteration(self, iteration, generator, optimiser, surrogates, surrogate_optimiser, augment) -> dict:
        """One pass of generator steps (+ EM surrogate steps and stop test); deterministic given seed+iteration."""
        cfg, context, device = self.settings, self.context, self.context.device
        seed, batch_size = self.config.seed, self.config.batch_size
        # Per-iteration seeds make a resumed run replay exactly what an uninterrupted one does.
        torch.manual_seed(seed * 100003 + iteration)
        order = torch.Generator().manual_seed(seed * 100003 + iteration)
        if self.robust is not None:
            self.robust.reseed(seed * 100003 + iteration + 31337)
        loader = context.train_loader(batch_size, shuffle=True, generator=order, num_samples=cfg.samples_per_epoch)
        if self.parallel is not None:
            loader = self.parallel.loader(loader)  # batch_size is the global batch; this rank's slice of each
        for model in surrogates:
            freeze(model)
        generator.train()
        totals = {"base_loss": 0.0, "intra": 0.0, "inter": 0.0}
        batches = 0
        for items in loader:
            x, labels, masks = item_tensors(items, device)
            if self.parallel is not None:
                self.parallel.begin_step(len(x))  # the step's share and this slice's place in the batch
            loss, loss_b, tables = self._generator_objective(generator, x, labels, masks, surrogates, augment)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            if self.parallel is not None:
                self.parallel.after_backward()
            optimiser.step()
            totals["base_loss"] += float(loss_b.detach())
            with torch.no_grad():
                totals["intra"] += float(intra_task_loss(tables))
                totals["inter"] += float(inter_task_loss(tables))
            batches += 1
        record = {k: v / max(batches, 1) for k, v in totals.items()}
        if self.parallel is not None:
            record["base_loss"] = float(self.parallel.epoch_losses(torch.tensor(record["base_loss"])))
        if surrogate_optimiser is not None:
            self._train_surrogate_steps(generator, surrogates[0], surrogate_optimiser, augment, iteration)
            error = self._poisoned_error(generator, surrogates[0])
            record["poisoned_train_error"] = error
            record["stop"] = error <= cfg.stop_error
        return record

    def _generator_objective(self, generator, x, labels, masks, surrogates, augment) -> tuple:
        """(loss, Σ_m L_b, embedding tables) of one batch: Σ_m [L_b(F_m(aug(x + δ)), y) + λ_intra·L_intra
        + λ_inter·L_inter] over the M surrogates, δ = G(x, y).

        The reference's SEP recomputes δ and backpropagates loss_m + regulariser for every checkpoint
        before one Adam step, so the regulariser's gradient is M times; δ is computed once here, which
        gives the same gradient (the generator is unchanged until the step)."""
        cfg = self.settings
        delta = generator(x, labels, masks, self.protected)
        if self.robust is None:
            poisoned, targets = augmented(augment, self._poison(x, delta), labels, self.parallel)
            loss_b = sum(base_loss(cfg.base, self.context.tasks, model(poisoned), targets, masks, "total",
                                   self.protected) for model in surrogates)
        else:  # one defense draw per surrogate, scored on its (mixed) labels as the victim's loss is
            loss_b = 0.0
            for model in surrogates:
                defended, mixed = self.robust(self._poison(x, delta), labels, masks, model)
                for weight, part_labels, part_masks in mixed:
                    poisoned, targets = augmented(augment, defended, part_labels, self.parallel)
                    loss_b = loss_b + weight * base_loss(cfg.base, self.context.tasks, model(poisoned), targets,
                                                         part_masks, "total", self.protected)
        tables = generator.embedding_tables()
        regulariser = embedding_regulariser(tables, cfg.lambda_intra, cfg.lambda_inter)
        return loss_b + len(surrogates) * regulariser, loss_b, tables

    def _poison(self, x: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        """x + δ, clipped to [0, 1] when clamp_inputs (what the store will hold, up to rounding)."""
        return (x + delta).clamp(0.0, 1.0) if self.settings.clamp_inputs else x + delta

    def _train_surrogate_steps(self, generator, model, optimiser, augment, iteration) -> None:
        """EM's alternating step: `train_on_poisoned` on aug(x + G(x,y)), a loader seeded by the iteration."""
        cfg, context = self.settings, self.context
        order = torch.Generator().manual_seed(self.config.seed * 100003 + iteration + 50021)
        loader = context.train_loader(self.config.batch_size, shuffle=True, generator=order)
        generator.eval()

        def poison(x, labels, masks, index):
            poisoned = self._poison(x, generator(x, labels, masks, self.protected))
            return augmented(augment, poisoned if self.robust is None else self.robust.images(poisoned), labels,
                             self.surrogate_parallel)

        if self.robust is not None:
            self.robust.reseed(self.config.seed * 100003 + iteration + 65537)

        if cfg.surrogate_restart:
            restart_surrogate(context, model, optimiser, self.config.seed * 100003 + iteration + 7919)

        parallel = {"parallel": self.surrogate_parallel} if self.surrogate_parallel is not None else {}
        train_on_poisoned(model, optimiser, loader, poison, context.tasks, self._surrogate_step_count(), context.device,
                          **parallel)

    def _surrogate_step_count(self) -> int:
        """--surrogate-steps, or 0: one pass over the samples an outer iteration's generator steps saw."""
        cfg = self.settings
        samples = cfg.samples_per_epoch or self.context.num_samples
        return cfg.surrogate_steps or max(1, math.ceil(min(samples, self.context.num_samples) / self.config.batch_size))

    @torch.no_grad()
    def _poisoned_error(self, generator, model) -> float:
        """EM stop test: `PoisonedError` of the surrogate on the poisoned train split (generator in eval mode)."""
        cfg, context, device = self.settings, self.context, self.context.device
        generator.eval()
        model.eval()
        errors, count = PoisonedError(context.tasks, self.protected), 0
        limit = cfg.samples_per_epoch or context.num_samples  # a CPU-sized run tests a prefix of the split
        dist = self.parallel.dist if self.parallel is not None else None
        for position, batch in enumerate(context.batches(max(self.config.batch_size, 256))):
            if count >= limit:
                break
            count += len(batch)
            if dist is not None and position % dist.world_size != dist.rank:
                continue  # under torchrun each rank tests every world_size-th batch; the counts are summed
            x, labels, masks = batch_tensors(batch, device)
            errors.add(model(self._poison(x, generator(x, labels, masks, self.protected))), labels, masks)
        if dist is not None:
            names = list(errors.wrong)
            totals = dist.all_reduce_sum(torch.tensor([float(errors.wrong[n]) for n in names] +
                                                      [float(errors.count[n]) for n in names], dtype=torch.float64))
            errors.wrong = dict(zip(names, totals[:len(names)].tolist()))
            errors.count = dict(zip(names, totals[len(names):].tolist()))
        return errors.worst()

    # -- emitting δ -------------------------------------------------------------------------
    @torch.no_grad()
    def perturb(self, batch: Batch, device: torch.device) -> np.ndarray:
        x, labels, masks = batch_tensors(batch, device)
        delta = self.generator(x, labels, masks, self.protected)
        return delta.permute(0, 2, 3, 1).float().cpu().numpy()

    def record(self) -> dict:
        cfg = self.settings
        info = {"generator_sha256": self.generator_sha256, "generator_sha256_of": "state-dict tensors (weights_sha256)", "lambda_intra": cfg.lambda_intra,
                "lambda_inter": cfg.lambda_inter, "generator_epochs": len(self.history),
                "generator_epoch_cap": cfg.epochs, "generator_lr": cfg.lr, "generator_weight_decay": cfg.weight_decay,
                "generator_milestones": cfg.scaled_milestones(),
                "augment": resolve_augment(cfg.augment, self.context.tasks),
                "robust": list(cfg.robust), "robust_rules": ROBUST_RULES if cfg.robust else None,
                "surrogate_steps_per_iteration": self._surrogate_step_count() if cfg.base == "em" else None,
                "clamp_inputs": cfg.clamp_inputs, "samples_per_epoch": cfg.samples_per_epoch,
                "generator_width": cfg.generator_width, "generator_stem": self.stem,
                "regulariser_scale": self.regulariser_scale,
                "effective_lambda_intra": None if self.regulariser_scale is None else cfg.lambda_intra * self.regulariser_scale,
                "effective_lambda_inter": None if self.regulariser_scale is None else cfg.lambda_inter * self.regulariser_scale,
                "regulariser_note": REGULARISER_NOTE,
                "protected_tasks": list(self.protected),
                "generator_history": self.history[-1:] if self.history else [],
                **(stop_report(self.history, cfg.epochs) if cfg.base == "em" else {})}
        if cfg.generator_path:
            info["generator_path"] = str(cfg.generator_path)
        if self.parallel_record is not None:  # trained under torchrun: world size, global/per-rank batch, bn_sync
            info["generator_distributed"] = self.parallel_record
        return info


def _is_main(context) -> bool:
    return context.dist is None or context.dist.is_main


def check_global_batch(saved: dict, current: dict, path) -> None:
    """ConfigError when a saved generator state differs from this run only in its (global) batch size: a
    restart under another world size keeps the recipe's global batch, never changes it silently."""
    if saved.get("batch_size") != current.get("batch_size") and \
            {**saved, "batch_size": None} == {**current, "batch_size": None}:
        raise ConfigError(f"{path}: this generator state was trained with global batch {saved.get('batch_size')}, "
                          f"not --batch-size {current.get('batch_size')}; keep the global batch when the world "
                          "size changes (per-rank batch = global / world size), or pass another --work-dir")


def scheduler_state_for_file(scheduler) -> dict:
    """The scheduler's state with MultiStepLR's Counter of milestones as a plain dict, so the checkpoint
    holds only what torch.load(weights_only=True) accepts on every supported torch."""
    state = dict(scheduler.state_dict())
    if "milestones" in state:
        state["milestones"] = {int(k): int(v) for k, v in state["milestones"].items()}
    return state


def scheduler_state_from_file(state: dict) -> dict:
    """Inverse of `scheduler_state_for_file`."""
    from collections import Counter

    state = dict(state)
    if "milestones" in state:
        state["milestones"] = Counter({int(k): int(v) for k, v in state["milestones"].items()})
    return state


def weights_sha256(module: torch.nn.Module) -> str:
    """sha256 over the state dict (names, dtypes, shapes, bytes in key order): reproducible, unlike
    the bytes of a torch.save file, which embed a random serialisation id."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        array = tensor.detach().cpu().contiguous().numpy()
        digest.update(f"{name}|{array.dtype}|{array.shape}|".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()
