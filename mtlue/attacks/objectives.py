"""Multi-task attack objectives and the input-gradient direction each one ascends.

single:<task>  ∇_x L_t                      (that task's batch-mean loss; Ghamizi et al. 2022 "single")
total          ∇_x Σ_t w_t L_t              (sum of batch-mean task losses, w_t = 1 unless given)
dgba           Σ_t ∇_x ℓ_t(x_k) / ℓ_t(x_k)  per sample, weights recomputed every step
               (Zhang et al., arXiv 2305.12066: the ILP over δ = ε·s, s ∈ {−1,+1}ⁿ is solved by
               sign(Σ_t g_t/ℓ_t); the attack step takes that sign)
signsum        Σ_t sign(∇_x L_t)            (per-coordinate vote of the task signs, DGBA code's SignSum)

Missing labels (mask False) contribute nothing to any objective.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mtlue.errors import ConfigError
from mtlue.models.losses import per_sample_loss

OBJECTIVE_KINDS = ("single", "total", "dgba", "signsum")

# Per-sample losses below this are treated as this value when DGBA divides by them.
LOSS_FLOOR = 1e-12


@dataclass(frozen=True)
class Objective:
    """A parsed objective: `kind`, the attacked task for `single`, fixed task weights for `total`."""

    kind: str
    task: str | None = None
    weights: tuple | None = None  # one weight per model task, in model.tasks order

    @property
    def spec(self) -> str:
        return f"single:{self.task}" if self.kind == "single" else self.kind


def parse_objective(spec, tasks, weights=None) -> Objective:
    """Build an Objective from `single:<task>`, `total`, `dgba` or `signsum`, checked against `tasks`.

    `weights` (only with `total`): a mapping task → weight or a sequence in `tasks` order.
    """
    if isinstance(spec, Objective):
        return spec
    names = [t.name for t in tasks]
    kind, _, task = str(spec).partition(":")
    if kind not in OBJECTIVE_KINDS:
        raise ConfigError(f"--objective {spec!r}: unknown objective (one of single:<task>, total, dgba, signsum)")
    if kind == "single":
        if task not in names:
            raise ConfigError(f"--objective {spec!r}: no task {task!r} (tasks: {', '.join(names)})")
    elif task:
        raise ConfigError(f"--objective {spec!r}: only single:<task> takes a task name")
    if weights is not None:
        if kind != "total":
            raise ConfigError(f"--objective {spec!r}: fixed task weights apply to 'total' only")
        if isinstance(weights, dict):
            unknown = sorted(set(weights) - set(names))
            if unknown:
                raise ConfigError(f"attack weights: no task {unknown[0]!r} (tasks: {', '.join(names)})")
            weights = tuple(float(weights.get(n, 1.0)) for n in names)
        else:
            weights = tuple(float(w) for w in weights)
            if len(weights) != len(names):
                raise ConfigError(f"attack weights: {len(weights)} given for {len(names)} tasks ({', '.join(names)})")
    return Objective(kind, task or None, weights)


def clean_labels(tasks, labels: dict, masks: dict | None, device) -> tuple[dict, dict]:
    """Labels and masks as tensors on `device`; a missing label is replaced by 0 so no loss sees NaN or −1."""
    masks = masks or {}
    safe_labels, bool_masks = {}, {}
    for t in tasks:
        if t.name not in labels:
            raise ConfigError(f"attack: no labels for task {t.name!r}")
        label = torch.as_tensor(labels[t.name], device=device)
        mask = masks.get(t.name)
        mask = torch.ones(len(label), dtype=torch.bool, device=device) if mask is None else torch.as_tensor(mask, device=device).bool()
        shaped = mask.reshape((-1,) + (1,) * (label.dim() - 1))
        if label.is_floating_point():
            label = torch.nan_to_num(label)
        safe_labels[t.name] = torch.where(shaped, label, torch.zeros_like(label))
        bool_masks[t.name] = mask
    return safe_labels, bool_masks


def sample_losses(model, x: torch.Tensor, labels: dict, masks: dict) -> torch.Tensor:
    """Per-task per-sample losses ℓ_t(x_b) as a (K, B) tensor, zero where the label is missing."""
    outputs = model(x)
    rows = []
    for t in model.tasks:
        loss = per_sample_loss(t, outputs[t.name], labels[t.name])
        rows.append(torch.where(masks[t.name], loss, torch.zeros_like(loss)))
    return torch.stack(rows)


def batch_means(losses: torch.Tensor, masks: dict, tasks) -> torch.Tensor:
    """Batch-mean loss per task over present labels (K,), as `task_loss` defines it."""
    counts = torch.stack([masks[t.name].sum() for t in tasks]).to(losses.dtype).clamp_min(1.0)
    return losses.sum(1) / counts


def task_signs(tasks, targeted, dtype=torch.float32, device=None) -> torch.Tensor:
    """+1 for tasks whose loss is ascended (untargeted), −1 for tasks descended toward given targets.

    `targeted` is a bool for every task or a mapping task name → bool (missing names: untargeted).
    """
    if isinstance(targeted, dict):
        flags = [bool(targeted.get(t.name, False)) for t in tasks]
    else:
        flags = [bool(targeted)] * len(tasks)
    return torch.tensor([-1.0 if flag else 1.0 for flag in flags], dtype=dtype, device=device)


def per_task_input_gradients(losses: torch.Tensor, x: torch.Tensor, batched: bool = True) -> torch.Tensor:
    """∇_x of each entry of `losses` (K,) stacked as (K, *x.shape).

    One batched vector-Jacobian product (`is_grads_batched=True`, vmap over the backward) when the
    model's ops support it; otherwise, or when `batched=False`, one backward per task.
    """
    k = len(losses)
    if batched:
        try:
            basis = torch.eye(k, dtype=losses.dtype, device=losses.device)
            (grads,) = torch.autograd.grad(losses, x, grad_outputs=basis, is_grads_batched=True, retain_graph=True)
            return grads
        except (RuntimeError, NotImplementedError):
            pass  # an op without a batching rule: fall back to the loop below
    rows = []
    for i in range(k):
        (grad,) = torch.autograd.grad(losses[i], x, retain_graph=i < k - 1, allow_unused=True)
        rows.append(torch.zeros_like(x) if grad is None else grad)
    return torch.stack(rows)


def objective_direction(model, x: torch.Tensor, labels: dict, masks: dict, objective: Objective,
                        targeted=False, per_task: str = "auto") -> tuple[torch.Tensor, torch.Tensor]:
    """The ascent direction of `objective` at x and the (K, B) per-sample losses there (detached).

    A targeted task is descended toward its labels: its loss enters with sign −1 (`task_signs`; e.g. dgba
    becomes Σ_t s_t ∇ℓ_t/ℓ_t). `per_task` chooses how signsum (and dgba when asked) get per-task
    gradients: "auto"/"batched" one batched VJP, "loop" K backward passes.
    For dgba "auto" uses one backward of Σ_{t,b} ℓ_tb / stopgrad(ℓ_tb): in eval mode sample b's input
    gradient only sees its own losses, so that equals Σ_t ∇ℓ_t/ℓ_t per sample exactly.
    """
    tasks = model.tasks
    x = x.detach().requires_grad_(True)
    losses = sample_losses(model, x, labels, masks)
    signs = task_signs(tasks, targeted, losses.dtype, losses.device)
    if objective.kind == "single":
        index = [t.name for t in tasks].index(objective.task)
        (direction,) = torch.autograd.grad(signs[index] * batch_means(losses, masks, tasks)[index], x)
    elif objective.kind == "total":
        means = batch_means(losses, masks, tasks)
        weights = torch.ones_like(means) if objective.weights is None else torch.tensor(objective.weights, dtype=means.dtype, device=means.device)
        (direction,) = torch.autograd.grad((signs * weights * means).sum(), x)
    elif objective.kind == "dgba":
        present = torch.stack([masks[t.name] for t in tasks]).to(losses.dtype)
        # (K, B) dynamic per-sample weights s_t/ℓ_t
        inverse = signs[:, None] * present / losses.detach().clamp_min(LOSS_FLOOR)
        if per_task == "auto":
            (direction,) = torch.autograd.grad((inverse * losses).sum(), x)
        else:
            grads = per_task_input_gradients(losses.sum(1), x, batched=per_task == "batched")
            shape = inverse.shape + (1,) * (x.dim() - 1)
            direction = (grads * inverse.reshape(shape)).sum(0)
    elif objective.kind == "signsum":
        grads = per_task_input_gradients(batch_means(losses, masks, tasks), x, batched=per_task != "loop")
        direction = (grads.sign() * signs.reshape((-1,) + (1,) * x.dim())).sum(0)
    else:
        raise ConfigError(f"objective {objective.kind!r}: not implemented")
    return direction, losses.detach()


def sample_scores(objective: Objective, losses: torch.Tensor, clean_losses: torch.Tensor, masks: dict, tasks,
                  targeted=False) -> torch.Tensor:
    """Per-sample value of the objective (B,), used to keep the best iterate (APGD).

    dgba: mean over present tasks of the signed relative loss change s_t·(ℓ_t(x) − ℓ_t(x₀)) / ℓ_t(x₀)
    (DGBA's averaged relative loss change, per sample); single/total/signsum: the (weighted) signed
    per-sample loss sum. s_t = −1 for targeted tasks.
    """
    present = torch.stack([masks[t.name] for t in tasks]).to(losses.dtype)
    signs = task_signs(tasks, targeted, losses.dtype, losses.device)[:, None]
    if objective.kind == "single":
        index = [t.name for t in tasks].index(objective.task)
        return signs[index, 0] * losses[index]
    if objective.kind == "dgba":
        relative = signs * (losses - clean_losses) / clean_losses.clamp_min(LOSS_FLOOR) * present
        return relative.sum(0) / present.sum(0).clamp_min(1.0)
    weights = torch.ones(len(tasks), dtype=losses.dtype, device=losses.device)
    if objective.weights is not None:
        weights = torch.tensor(objective.weights, dtype=losses.dtype, device=losses.device)
    return (signs * weights[:, None] * losses).sum(0)
