"""The victim training loop: an optimiser and LR schedule, augmentation, a task weighting, masked
losses, per-epoch tests.

Defaults follow the MTL-UE victims (Adam lr 1e-3, wd 1e-4, LR × 0.1 at 60% and 80% of the epochs,
grad-norm clip 5, no augmentation). An attacker profile changes the optimiser (SGD with momentum),
the schedule (cosine), the augmentation (`mtlue.augment`), the backbone and the epochs. Runs on
whatever device it is given; deterministic on CPU for a seed.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from mtlue.data.base import item_tensors, label_tensor
from mtlue.distributed_training import DataParallel
from mtlue.errors import ConfigError
from mtlue.jsonio import write_json
from mtlue.metrics import (DenseChance, DenseMetrics, best_value, chance_values, check_binary_metric, nanmean,
                           primary_metric, task_metrics)
from mtlue.models.losses import predictions, task_losses
from mtlue.models.mtl import build_model, save_checkpoint
from mtlue.runtime import seed_everything
from mtlue.weighting import build_weighting


OPTIMIZERS = ("adam", "sgd")
SCHEDULES = ("step", "cosine")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a victim run (JSON-able; recorded in metrics.json)."""

    backbone: str = "resnet18"
    weighting: str = "ew"
    epochs: int = 60
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 1e-4
    milestones: tuple = (0.6, 0.8)  # fractions of `epochs` where the LR drops by `gamma`
    gamma: float = 0.1
    step_size: int = 0  # > 0: the LR drops by `gamma` every `step_size` epochs (StepLR), not at `milestones`
    grad_clip: float = 5.0
    grad_space: str = "shared"  # "shared" (exact) | "representation"
    grad_method: str = "auto"  # how exact per-task gradients are computed (weighting/jacobian.py)
    grad_chunk: int = 0  # tasks per batched vector-Jacobian product (0: all K at once; lower saves memory)
    stl: bool = False
    seed: int = 0
    num_workers: int = 0
    checkpoint_every: int = 0  # save out_dir/checkpoints/epoch_{k}.pt every N epochs (SEP)
    defense: str | None = None  # name only, recorded; the callable is passed to train_model
    binary_metric: str = "balanced_accuracy"  # or auc; what the printed summary uses for binary tasks
    optimizer: str = "adam"  # adam | sgd (with `momentum`, Nesterov)
    momentum: float = 0.9
    schedule: str = "step"  # step (× gamma at `milestones`) | cosine (to 0 over `epochs`)
    augment: str = "none"  # none | standard (mtlue.augment)

    def __post_init__(self):
        from mtlue.augment import AUGMENTS

        if self.epochs < 1:
            raise ConfigError(f"--epochs {self.epochs}: must be at least 1")
        if self.batch_size < 1:
            raise ConfigError(f"--batch-size {self.batch_size}: must be at least 1")
        if not self.lr > 0:
            raise ConfigError(f"--lr {self.lr}: must be positive")
        if self.step_size < 0:
            raise ConfigError(f"step_size {self.step_size}: must be >= 0 (0: drop the LR at `milestones`)")
        if self.stl and self.weighting != "ew":
            raise ConfigError(f"--stl trains one network per task; --weighting {self.weighting!r} has nothing to weigh (use ew)")
        for option, value, choices in (("--optimizer", self.optimizer, OPTIMIZERS), ("--schedule", self.schedule, SCHEDULES),
                                       ("--augment", self.augment, AUGMENTS)):
            if value not in choices:
                raise ConfigError(f"{option} {value!r}: one of {', '.join(choices)}")
        check_binary_metric(self.binary_metric)

    def milestone_epochs(self) -> list:
        """Epochs after which the LR is multiplied by `gamma`: every `step_size` epochs (StepLR) when set,
        else the `milestones` fractions of `epochs`."""
        if self.step_size:
            return list(range(self.step_size, self.epochs, self.step_size))
        return sorted({max(1, int(round(f * self.epochs))) for f in self.milestones})


@dataclass
class TrainResult:
    model: torch.nn.Module
    history: dict = field(default_factory=dict)


def _as_dataset(data, split: str):
    return data.dataset(split) if hasattr(data, "dataset") and hasattr(data, "splits") else data


def build_optimizer(config: TrainConfig, groups: list) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, nesterov=config.momentum > 0,
                               weight_decay=config.weight_decay)
    return torch.optim.Adam(groups, lr=config.lr, weight_decay=config.weight_decay)


def build_schedule(config: TrainConfig, optimizer) -> torch.optim.lr_scheduler.LRScheduler:
    """Stepped once per epoch: MultiStepLR at `milestone_epochs()`, or cosine annealing to 0 over `epochs`."""
    if config.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs)
    return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=config.milestone_epochs(), gamma=config.gamma)


def evaluate(model, loader, tasks, device) -> tuple[dict, dict]:
    """Test metrics per task -> ({task: {metric: value}}, {task: (labels, masks)}); dense tasks are
    aggregated over every valid pixel of the split (`DenseMetrics`) and have no label arrays."""
    model.eval()
    preds, scores, labels, masks = ({t.name: [] for t in tasks if not t.is_dense} for _ in range(4))
    dense = {t.name: DenseMetrics(t) for t in tasks if t.is_dense}
    with torch.no_grad():
        for batch in loader:
            images, batch_labels, batch_masks = item_tensors(batch, device)
            outputs = model(images)
            for t in tasks:
                if t.is_dense:
                    dense[t.name].add(outputs[t.name], batch_labels[t.name], batch_masks[t.name])
                    continue
                preds[t.name].append(predictions(t, outputs[t.name]).cpu().numpy())
                scores[t.name].append(outputs[t.name].float().cpu().numpy())
                labels[t.name].append(batch_labels[t.name].cpu().numpy())
                masks[t.name].append(batch_masks[t.name].cpu().numpy())
    results, label_arrays = {name: meter.values() for name, meter in dense.items()}, {}
    for t in tasks:
        if t.is_dense:
            continue
        y, m = np.concatenate(labels[t.name]), np.concatenate(masks[t.name]).astype(bool)
        s = np.concatenate(scores[t.name]) if t.kind == "binary" else None
        results[t.name] = task_metrics(t, y, np.concatenate(preds[t.name]), s, m)
        label_arrays[t.name] = (y, m)
    return results, label_arrays


def fit_dense_chance(train_set, tasks, num_workers: int, device) -> dict:
    """{dense task: DenseChance} of the train labels, in one pass over the train split (labels are
    streamed, never held: a dense split's labels can be gigabytes)."""
    fits = {t.name: DenseChance(t) for t in tasks if t.is_dense}
    if fits:
        for batch in torch.utils.data.DataLoader(train_set, batch_size=32, shuffle=False, num_workers=num_workers):
            labels, masks = batch["labels"], batch["masks"]
            for name, fit in fits.items():
                fit.add(label_tensor(labels[name]).to(device), masks[name].to(device))
    return fits


def dense_chance_values(fits: dict, loader, device) -> dict:
    """{task: {metric: value}}: each dense task's image-blind predictor (`DenseChance`) scored on `loader`."""
    meters = {name: DenseMetrics(fit.task) for name, fit in fits.items()}
    if meters:
        for batch in loader:
            _, labels, masks = item_tensors(batch, device)
            for name, fit in fits.items():
                meters[name].add(fit.output(labels[name]), labels[name], masks[name])
    return {name: meter.values() for name, meter in meters.items()}


def _defended_losses(tasks, outputs, targets: list, masks) -> torch.Tensor:
    """Σ_j weight_j · task_losses(labels_j), for the (weight, labels[, masks]) targets a defense returns."""
    total = None
    for weight, labels, *target_masks in targets:
        part = weight * task_losses(tasks, outputs, labels, target_masks[0] if target_masks else masks)
        total = part if total is None else total + part
    return total


def train_model(config: TrainConfig, train_data, test_data, tasks, device, out_dir=None, defense=None, progress: bool = True, floor_labels: dict | None = None, dist=None) -> TrainResult:
    """Train a victim on `train_data`, test on `test_data` every epoch; history as metrics.json holds.

    Data are torch Datasets of item dicts (or Sources: their 'train'/'test' splits are used).
    `floor_labels` {task: (labels, masks)} are the train labels for the majority floor of the
    image-level tasks; when absent they are gathered from the training batches of the first epoch
    (dense tasks' chance is always fitted in one streamed pass, `fit_dense_chance`).
    `defense(images, labels, masks, model) -> (images, [(weight, labels), ...])` runs on each batch.
    Under torchrun (`dist`, mtlue.distributed.DistContext) `batch_size` stays the global batch: each rank
    trains on its slice of every global batch and the ranks' gradients are combined exactly
    (mtlue.distributed_training); rank 0 alone writes `out_dir`.
    """
    from tqdm.auto import tqdm

    tasks = tuple(tasks)
    device = torch.device(device)
    train_set, test_set = _as_dataset(train_data, "train"), _as_dataset(test_data, "test")
    if len(train_set) == 0:
        raise ConfigError("training data is empty")
    from mtlue.augment import build_augmentation

    generator = seed_everything(config.seed)
    first_image = train_set[0]["image"]  # (C, H, W)
    channels, height, _ = first_image.shape
    dense = any(t.is_dense for t in tasks)
    model = build_model(tasks, config.backbone, in_channels=int(channels), image_size=int(height), stl=config.stl).to(device)
    weighting = build_weighting(config.weighting, len(tasks), generator=torch.Generator().manual_seed(config.seed + 1), grad_space=config.grad_space, grad_method=config.grad_method, chunk=config.grad_chunk, dist=dist).to(device)
    data_parallel = DataParallel.of(dist, model, weighting, config.batch_size)
    groups = [{"params": list(model.parameters())}]
    if list(weighting.parameters()):
        groups.append({"params": list(weighting.parameters()), "weight_decay": 0.0})
    optimizer = build_optimizer(config, groups)
    scheduler = build_schedule(config, optimizer)
    moves_labels = config.augment != "none" and dense
    if moves_labels:  # a dense label is tied to pixels: one shift and flip for the image and its label maps
        from mtlue.dense_augment import LabelAwareEOT, dense_flips_allowed

        augment = LabelAwareEOT("crop_flip" if dense_flips_allowed(tasks) else "crop", first_image.shape[1:], tasks)
    else:
        augment = build_augmentation(config.augment, tasks, first_image.permute(1, 2, 0).shape).to(device)
    train_loader = torch.utils.data.DataLoader(train_set, batch_size=config.batch_size, shuffle=True, generator=generator, num_workers=config.num_workers, drop_last=len(train_set) > config.batch_size, persistent_workers=config.num_workers > 0)
    if data_parallel is not None:
        train_loader = data_parallel.loader(train_loader)
        progress = progress and dist.is_main
        out_dir = out_dir if dist.is_main else None
    # dense outputs are full-resolution maps per task: test at the training batch size (LibMTL: 8 on NYUv2)
    test_batch = config.batch_size if dense else max(config.batch_size, 256)
    test_loader = torch.utils.data.DataLoader(test_set, batch_size=test_batch, shuffle=False, num_workers=config.num_workers)
    metric_names = {t.name: primary_metric(t, config.binary_metric) for t in tasks}
    collected = {t.name: ([], []) for t in tasks if not t.is_dense} if floor_labels is None else None
    chance_fits = fit_dense_chance(train_set, tasks, config.num_workers, device)
    if chance_fits:
        from mtlue.models.dense import start_depth_heads

        start_depth_heads(model, {name: float(fit.split_value()[0]) for name, fit in chance_fits.items()
                                  if fit.task.kind == "depth"})
    history = {"config": asdict(config), "tasks": [t.to_json() for t in tasks], "metric": metric_names, "epochs": []}
    if data_parallel is not None:
        history["distributed"] = data_parallel.record()
    started = time.perf_counter()
    for epoch in range(1, config.epochs + 1):
        model.train()
        loss_sum, steps, epoch_start = torch.zeros(len(tasks), dtype=torch.float64), 0, time.perf_counter()
        bar = tqdm(train_loader, desc=f"{config.weighting} epoch {epoch}/{config.epochs}", leave=False, disable=not progress)
        for batch in bar:
            images, labels, masks = item_tensors(batch, device)
            if collected is not None and epoch == 1:
                for t in tasks:
                    if t.is_dense:
                        continue
                    collected[t.name][0].append(batch["labels"][t.name].numpy())
                    collected[t.name][1].append(batch["masks"][t.name].numpy())
            if data_parallel is not None:  # the step's share and slice: augmentation draws for the global batch
                data_parallel.begin_step(len(images))
            if moves_labels:
                images, labels = (augment(images, labels) if data_parallel is None else
                                  data_parallel.on_global_batch(augment, images, labels))
            elif config.augment != "none":
                images = (augment(images) if data_parallel is None else
                          data_parallel.on_global_batch(lambda xs, ls: (augment(xs), ls), images, {})[0])
            targets = [(1.0, labels)]
            if defense is not None:
                images, targets = defense(images, labels, masks, model)
            optimizer.zero_grad(set_to_none=True)
            rep = model.features(images)
            outputs = model.heads_forward(rep)
            losses = _defended_losses(tasks, outputs, targets, masks)
            if not torch.isfinite(losses).all():
                raise ConfigError(f"epoch {epoch}: non-finite task loss {losses.tolist()} (lower --lr?)")
            weighting.backward(losses, model, rep)
            if data_parallel is not None:
                data_parallel.after_backward()
            if config.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            loss_sum += losses.detach().double().cpu()
            steps += 1
            bar.set_postfix(loss=f"{float(losses.detach().sum()):.3f}")
        scheduler.step()
        if data_parallel is not None:
            loss_sum = data_parallel.epoch_losses(loss_sum)
        weighting.end_epoch(loss_sum / max(steps, 1))
        if collected is not None and epoch == 1:
            if data_parallel is not None:  # each rank saw its slices: the floor needs every rank's labels
                collected = data_parallel.gather_labels(collected)
            floor_labels = {k: (np.concatenate(v[0]), np.concatenate(v[1]).astype(bool)) for k, v in collected.items()}
            collected = None
        test_metrics, test_labels = evaluate(model, test_loader, tasks, device)
        record = {
            "epoch": epoch,
            "train_loss": {t.name: float(loss_sum[i] / max(steps, 1)) for i, t in enumerate(tasks)},
            "test": test_metrics,
            "mean": nanmean(test_metrics[t.name][metric_names[t.name]] for t in tasks),
            "seconds": time.perf_counter() - epoch_start,
        }
        history["epochs"].append(record)
        if progress:
            tqdm.write(f"epoch {epoch}/{config.epochs}: mean test metric {record['mean']:.4f} ({record['seconds']:.1f} s)")
        if out_dir is not None and config.checkpoint_every and epoch % config.checkpoint_every == 0:
            save_checkpoint(model, os.path.join(out_dir, "checkpoints", f"epoch_{epoch}.pt"), {"epoch": epoch, "config": asdict(config)})
    history["wall_seconds"] = time.perf_counter() - started
    _summarise(history, tasks, metric_names, floor_labels, test_labels, dense_chance_values(chance_fits, test_loader, device))
    if out_dir is not None:
        os.makedirs(out_dir, exist_ok=True)
        save_checkpoint(model, os.path.join(out_dir, "model.pt"), {"epoch": config.epochs, "config": asdict(config)})
        write_history(history, os.path.join(out_dir, "metrics.json"))
    return TrainResult(model=model, history=history)


def _summarise(history: dict, tasks, metric_names: dict, floor_labels: dict, test_labels: dict,
               dense_chance: dict | None = None) -> None:
    """Add per-task chance of every metric (dense tasks: `dense_chance`, from `dense_chance_values`), and floor (chance), peak (best over epochs) and last values
    of the summary metric with their task means."""
    chance, floor, peak, last = {}, {}, {}, {}
    for t in tasks:
        name = metric_names[t.name]
        if t.is_dense:
            chance[t.name] = dense_chance[t.name]
        else:
            train_y, train_m = floor_labels[t.name]
            test_y, test_m = test_labels[t.name]
            chance[t.name] = chance_values(t, train_y, test_y, np.asarray(train_m, dtype=bool), test_m)
        floor[t.name] = chance[t.name][name]
        values = [e["test"][t.name][name] for e in history["epochs"]]
        peak[t.name] = best_value(values, name)
        last[t.name] = values[-1]
    history["chance"], history["floor"], history["peak"], history["last"] = chance, floor, peak, last
    history["mean"] = {"floor": nanmean(floor.values()), "peak": nanmean(peak.values()), "last": nanmean(last.values())}


def write_history(history: dict, path) -> None:
    """Write the history as JSON (nan → null), atomically."""
    write_json(path, history, indent=1)


def check_training_sources(train_source, test_source, train_name: str, test_name: str) -> None:
    """A victim trains on the 'train' split of one source and tests on the 'test' split of another:
    both splits must exist and the tasks must agree (name, kind, classes, order)."""
    from mtlue.data.base import check_compatible_tasks

    if "train" not in train_source.splits():
        raise ConfigError(f"{train_name}: has no 'train' split (splits: {', '.join(train_source.splits())})")
    if "test" not in test_source.splits():
        raise ConfigError(f"{test_name}: has no 'test' split; name a clean test source with --test SOURCE")
    check_compatible_tasks(train_source.tasks, test_source.tasks, train_name, test_name)
