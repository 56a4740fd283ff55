"""The clean surrogate (TAP) and its checkpoint ensemble (SEP), trained once with the victim code;
EM's surrogate, trained alternately on poisoned data, and its stop statistic.

Trained with `mtlue.train.train_model` on the clean train split (weighting ew) and cached in
`work_dir/surrogate/`: `model.pt` (final weights), `epoch-*.pt` checkpoints, `surrogate.json`
(written last: its presence means the surrogate is complete). The cache is reused only when
`surrogate.json` records the same key: the surrogate settings, the seed and the data identity;
otherwise the directory is cleared and the surrogate retrained.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import shutil
from pathlib import Path

import torch
import torch.nn.functional as F

from mtlue.data.base import item_tensors
from mtlue.errors import ConfigError
from mtlue.data.dense import valid_pixels
from mtlue.models.losses import predictions, task_losses
from mtlue.models.mtl import build_model, load_checkpoint, save_checkpoint
from mtlue.store.layout import dumps_json, sha256_file, write_text_atomic

INFO_FILE = "surrogate.json"
MODEL_FILE = "model.pt"
DEPTH_RATIO_HIT = 1.25  # depth δ < 1.25 (Eigen et al.), the tightest standard depth accuracy
NORMAL_ANGLE_HIT = 11.25  # degrees, the tightest standard normal accuracy
SURROGATE_GRAD_CLIP = 5.0  # the reference clips every surrogate update (clean and EM) to this gradient norm
# How EM's surrogate is trained and judged (MTL-UE's EM base and the per-sample EM baseline alike);
# part of both resume keys, so a state saved under other rules is not resumed.
EM_SURROGATE_RULES = {"grad_clip": SURROGATE_GRAD_CLIP, "error": "worst protected classification task"}
# What a dense task adds to the stop statistic (joins a resume key only where there are dense tasks): the
# share of its valid pixels that miss at the tightest standard threshold of its metric.
DENSE_ERROR_RULES = {"segmentation": "pixel error", "depth": f"1 - (delta < {DEPTH_RATIO_HIT})",
                     "normal": f"1 - (angle < {NORMAL_ANGLE_HIT} deg)"}


def freeze(model: torch.nn.Module) -> torch.nn.Module:
    """Eval mode and requires_grad False: a fixed surrogate during generator updates."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def fresh_surrogate(context, seed: int) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    """EM's surrogate: a randomly initialised model of the configured backbone and its Adam optimiser;
    depth heads start at the train-mean depth, as victims do (`mtlue.models.dense.start_depth_heads`)."""
    settings = context.config.surrogate
    height, _, channels = context.source.image_shape
    torch.manual_seed(seed)
    model = build_model(context.tasks, settings.backbone, in_channels=channels, image_size=height).to(context.device)
    depths = context.train_mean_depths()
    if depths:
        from mtlue.models.dense import start_depth_heads

        start_depth_heads(model, depths)
    return model, torch.optim.Adam(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)


def restart_surrogate(context, model: torch.nn.Module, optimiser: torch.optim.Optimizer, seed: int) -> None:
    """Re-initialise `model` in place as `fresh_surrogate(context, seed)` builds it, and forget the
    optimiser's moments: the next `train_on_poisoned` trains a new model from scratch."""
    fresh, _ = fresh_surrogate(context, seed)
    model.load_state_dict(fresh.state_dict())
    optimiser.state.clear()


def train_on_poisoned(model, optimiser, loader, poison, tasks, steps: int, device, parallel=None) -> None:
    """EM's alternating surrogate update: `steps` Adam mini-batches of Σ_t ℓ_t(F(x'), y_t) on poisoned
    x' = poison(x, labels, masks, index) (no gradient to δ), gradient norm clipped to 5.0 (Huang et al.
    2021, as the MTL-UE reference runs it). `poison` may return (x', labels') when it moves dense label
    maps with the image (mtlue.dense_augment). Leaves the model frozen (see `freeze`).
    Under torchrun (`parallel`, mtlue.distributed_training.DataParallel of `model`) each rank trains on its
    slice of every global batch and the gradients are averaged before the clip."""
    if parallel is not None:
        loader = parallel.loader(loader)
    model.train()
    for p in model.parameters():
        p.requires_grad_(True)
    for step, items in enumerate(loader):
        if step >= steps:
            break
        x, labels, masks = item_tensors(items, device)
        if parallel is not None:
            parallel.begin_step(len(x))  # the step's share and this slice's place in the batch
        with torch.no_grad():
            poisoned = poison(x, labels, masks, items["index"])
        if isinstance(poisoned, tuple):
            poisoned, labels = poisoned
        loss = task_losses(tasks, model(poisoned), labels, masks).sum()
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        if parallel is not None:
            parallel.after_backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), SURROGATE_GRAD_CLIP)
        optimiser.step()
    freeze(model)


class PoisonedError:
    """EM's stop statistic over batches: per protected classification task, the surrogate's error
    against the true labels (missing labels skipped); per protected dense task, the share of valid
    pixels it misses (DENSE_ERROR_RULES); `worst()`, the largest of them, is at most stop_error exactly
    when every task is (`misses`)."""

    def __init__(self, tasks, task_names):
        self.tasks = tuple(t for t in tasks if (t.is_classification or t.is_dense) and t.name in task_names)
        self.wrong = {t.name: 0 for t in self.tasks}
        self.count = {t.name: 0 for t in self.tasks}

    def add(self, outputs: dict, labels: dict, masks: dict | None = None) -> None:
        masks = masks or {}
        for task in self.tasks:
            miss, valid = misses(task, outputs[task.name], labels[task.name])
            mask = masks.get(task.name)
            if mask is not None:  # a missing label: none of its sample's pixels count
                valid = valid & mask.reshape((-1,) + (1,) * (valid.dim() - 1)).bool()
            self.wrong[task.name] += int((miss & valid).sum())
            self.count[task.name] += int(valid.sum())

    def worst(self) -> float:
        errors = [self.wrong[name] / self.count[name] for name in self.wrong if self.count[name]]
        return max(errors) if errors else 0.0


def misses(task, output: torch.Tensor, label: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(miss, valid), both bool ((B,) or (B,H,W)), of one task: a wrong class; a depth off by a ratio of
    DEPTH_RATIO_HIT or more; a normal NORMAL_ANGLE_HIT degrees or more off; valid: the labelled pixels."""
    if task.is_classification:
        miss = predictions(task, output) != label.reshape(-1).long()
        return miss, torch.ones_like(miss)
    valid = valid_pixels(task, label)
    if task.kind == "segmentation":
        return predictions(task, output) != label.long(), valid
    if task.kind == "depth":
        predicted, truth = output[:, 0].float(), label[:, 0].float()
        ratio = torch.maximum(predicted / truth.clamp_min(1e-12), truth / predicted.clamp_min(1e-12))
        return (predicted <= 0) | ~(ratio < DEPTH_RATIO_HIT), valid
    cosine = (F.normalize(output.float(), dim=1, eps=1e-12) * label.float()).sum(1)
    return ~(cosine > math.cos(math.radians(NORMAL_ANGLE_HIT))), valid


def _epoch_of(path: Path) -> int:
    numbers = re.findall(r"\d+", path.stem)
    return int(numbers[-1]) if numbers else -1


def cache_key(context) -> dict:
    """Every input of the cached surrogate: its settings, the protection seed and the data identity."""
    return json.loads(json.dumps({"settings": dataclasses.asdict(context.config.surrogate),
                                  "seed": context.config.seed, "data": context.data_identity()}))


def _train_surrogate(context) -> dict:
    """Train the clean surrogate once with the victim training loop and cache it; return its info."""
    from mtlue.train import TrainConfig, train_model

    settings = context.config.surrogate
    out_dir = context.surrogate_dir
    if out_dir.is_dir() and not out_dir.is_symlink():
        shutil.rmtree(out_dir)  # another key's checkpoints must not join this run's ensemble
    out_dir.mkdir(parents=True, exist_ok=True)
    train_config = TrainConfig(backbone=settings.backbone, weighting=settings.weighting, epochs=settings.epochs,
                               batch_size=settings.batch_size, lr=settings.lr, weight_decay=settings.weight_decay,
                               seed=context.config.seed, checkpoint_every=settings.checkpoint_interval)
    test_data = context.source.dataset("test") if "test" in context.source.splits() else None
    before = set(out_dir.rglob("*.pt"))
    result = train_model(train_config, context.train_dataset(), test_data, context.tasks, context.device,
                         out_dir=str(out_dir), progress=context.progress)
    model_path = out_dir / MODEL_FILE
    save_checkpoint(result.model, str(model_path), {"role": "clean surrogate", "backbone": settings.backbone,
                                                    "epochs": settings.epochs})
    checkpoints = sorted((p for p in out_dir.rglob("*.pt") if p not in before and p.name != MODEL_FILE
                          and not p.name.endswith(".tmp")), key=_epoch_of)
    checkpoints = checkpoints[-settings.num_checkpoints:]
    info = {"key": cache_key(context), "source": "trained", "backbone": settings.backbone, "epochs": settings.epochs,
            "batch_size": settings.batch_size, "weighting": settings.weighting,
            "checkpoint_every": settings.checkpoint_interval,
            "model": MODEL_FILE, "checkpoints": [str(p.relative_to(out_dir)) for p in checkpoints],
            **surrogate_scores(out_dir / "metrics.json")}
    write_text_atomic(str(out_dir / INFO_FILE), dumps_json(info))
    return info


NEAR_CHANCE = 0.1  # a clean surrogate task whose test score clears chance by less than this share of the way to 1


def surrogate_scores(metrics_path: Path) -> dict:
    """The clean surrogate's last-epoch test score per task (from its metrics.json) and the tasks it barely
    learned, which TAP and SEP cannot aim at: `clean_test_scores` and `near_chance_tasks` (warned about)."""
    if not metrics_path.is_file():
        return {"clean_test_scores": None, "near_chance_tasks": None}
    metrics = json.loads(metrics_path.read_text())
    scores, near = {}, []
    for name, metric in (metrics.get("metric") or {}).items():
        score = (metrics.get("last") or {}).get(name)
        chance = ((metrics.get("chance") or {}).get(name) or {}).get(metric)
        if score is None or chance is None or metric not in ("accuracy", "balanced_accuracy", "auc"):
            continue
        gain = (score - chance) / (1 - chance) if chance < 1 else 0.0
        scores[name] = {"metric": metric, "score": score, "chance": chance, "gain": gain}
        if gain < NEAR_CHANCE:
            near.append(name)
    if near:
        print(f"[protect] warning: the clean surrogate learned {', '.join(near)} barely above chance "
              f"(gain < {NEAR_CHANCE:g} of the way to a perfect score); TAP/SEP cannot aim at what it does not know: "
              f"train it longer (--surrogate-epochs) or on a stronger backbone", flush=True)
    return {"clean_test_scores": scores, "near_chance_tasks": near}


def _surrogate_info(context) -> dict:
    path = context.surrogate_dir / INFO_FILE
    if path.is_file():
        try:
            info = json.loads(path.read_text())
        except ValueError:
            info = {}
        if info.get("key") == cache_key(context):
            return info
    return _train_surrogate(context)


def load_or_train_surrogate(context):
    """(frozen clean surrogate on context.device, info dict); --surrogate wins over the cache."""
    given = context.config.settings.surrogate_path
    if given:
        path = Path(given)
        if path.is_dir():
            path = path / MODEL_FILE
        if not path.is_file():
            raise ConfigError(f"--surrogate {given}: no checkpoint file there")
        model, meta = load_checkpoint(str(path), context.device)
        return freeze(model), {"source": "given", "path": str(path), "sha256": sha256_file(str(path)),
                               **surrogate_scores(path.parent / "metrics.json")}
    info = _public(_surrogate_info(context))
    path = context.surrogate_dir / info["model"]
    model, _ = load_checkpoint(str(path), context.device)
    info = dict(info, sha256=sha256_file(str(path)))
    return freeze(model), info


def _public(info: dict) -> dict:
    """The info without its cache key (which names the data's spec): what the manifest may record."""
    return {k: v for k, v in info.items() if k != "key"}


def surrogate_checkpoint_paths(context) -> list[Path]:
    """SEP ensemble: checkpoints of one clean run (--surrogate DIR: its *.pt; a file: just that file)."""
    given = context.config.settings.surrogate_path
    if given:
        path = Path(given)
        if path.is_dir():
            paths = sorted((p for p in path.rglob("*.pt") if p.name != MODEL_FILE), key=_epoch_of)
            return paths[-context.config.surrogate.num_checkpoints:] or [path / MODEL_FILE]
        return [path]
    info = _surrogate_info(context)
    paths = [context.surrogate_dir / p for p in info["checkpoints"]]
    return paths or [context.surrogate_dir / info["model"]]


def load_ensemble(context) -> tuple[list[torch.nn.Module], dict]:
    """(the SEP checkpoints as frozen models on context.device, info dict naming them)."""
    paths = surrogate_checkpoint_paths(context)
    given = context.config.settings.surrogate_path
    info = {"source": "given", "path": given} if given else _public(_surrogate_info(context))
    info = dict(info, ensemble=[str(p) for p in paths], ensemble_size=len(paths))
    return [freeze(load_checkpoint(str(p), context.device)[0]) for p in paths], info

