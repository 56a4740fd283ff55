"""Per-task gradient matrices: exact shared-parameter Jacobians and representation Jacobians.

Ways to get G (K × P), row k = ∇ L_k (`auto`: batched on CUDA, loop on CPU, where the
batched convolution backward measured slower than the loop in bench/bench_weighting.py):
- `batched`: batched vector–Jacobian products (`is_grads_batched=True`, vmap over K one-hot
  cotangents) through the backbone, `chunk` tasks at a time; falls back to `loop` when an op
  has no batching rule.
- `loop`: the K backbone backward passes one after another, starting from ∂L_k/∂rep.
- `sequential`: K full backward passes from each loss (what LibMTL and the MTL-UE code do).
"""

from __future__ import annotations

import torch

GRAD_METHODS = ("auto", "batched", "loop", "sequential")


def _flat(grads, params) -> torch.Tensor:
    return torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1) for g, p in zip(grads, params)])


def _flat_batched(grads, params, k: int) -> torch.Tensor:
    return torch.cat([(g if g is not None else torch.zeros((k,) + p.shape, device=p.device, dtype=p.dtype)).reshape(k, -1) for g, p in zip(grads, params)], dim=1)


def representation_jacobian(losses: torch.Tensor, rep: torch.Tensor) -> torch.Tensor:
    """∂L_k/∂rep for every task at once: (K, *rep.shape); only the heads are traversed."""
    eye = torch.eye(len(losses), device=losses.device, dtype=losses.dtype)
    try:
        (jac,) = torch.autograd.grad(losses, rep, grad_outputs=eye, is_grads_batched=True, retain_graph=True)
    except RuntimeError:
        jac = torch.stack([torch.autograd.grad(loss, rep, retain_graph=True)[0] for loss in losses])
    return jac


def shared_jacobian(losses: torch.Tensor, rep: torch.Tensor, params: list, method: str = "auto", chunk: int = 0) -> torch.Tensor:
    """Exact per-task gradients of the shared parameters, (K, P); `rep` is the shared representation."""
    k = len(losses)
    if method == "auto":
        method = "batched" if rep.is_cuda else "loop"
    if method == "sequential":
        return torch.stack([_flat(torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True), params) for loss in losses])
    rep_jac = representation_jacobian(losses, rep)
    if method == "batched":
        step = chunk if chunk > 0 else k
        try:
            rows = []
            for lo in range(0, k, step):
                grads = torch.autograd.grad(rep, params, grad_outputs=rep_jac[lo : lo + step], is_grads_batched=True, retain_graph=True, allow_unused=True)
                rows.append(_flat_batched(grads, params, len(rep_jac[lo : lo + step])))
            return torch.cat(rows)
        except RuntimeError:
            pass  # an op without a vmap rule (e.g. some attention kernels): fall back to the loop
    return torch.stack([_flat(torch.autograd.grad(rep, params, grad_outputs=rep_jac[i], retain_graph=True, allow_unused=True), params) for i in range(k)])


def write_flat_grad(params: list, flat: torch.Tensor) -> None:
    """Accumulate a flat gradient vector into the `.grad` of `params` (in order)."""
    offset = 0
    for p in params:
        n = p.numel()
        g = flat[offset : offset + n].view_as(p)
        p.grad = g.clone() if p.grad is None else p.grad + g
        offset += n
