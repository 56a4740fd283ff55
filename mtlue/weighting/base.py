"""The task-weighting interface shared by every strategy (LibMTL's AbsWeighting, made explicit).

A weighting receives the (K,) vector of task losses, the model and the shared representation of
the batch, and **performs the backward pass**: afterwards every trainable parameter of the model
(and of the weighting itself, e.g. UW's log-variances) holds its `.grad`; the optimiser step is
the caller's. `backward` returns the task weights it used, (K,), detached.

- Loss-based strategies (`LossWeighting`: ew, uw, rlw, dwa) combine the losses into one scalar
  and back-propagate it once.
- Gradient-based strategies (`GradientWeighting`: aligned_mtl, fairgrad, mgda, pcgrad, cagrad,
  gradnorm) compute the per-task gradients G (K × P) of the shared parameters (exact, default) or
  of the shared representation (`grad_space="representation"`), derive weights α from the Gram
  matrix GGᵀ, and set the shared gradient to αᵀG. Task heads get ∇ Σ_k L_k (each head only
  sees its own loss), as in LibMTL, except where the reference back-propagates Σ_k α_k L_k
  (`weights_heads`: FairGrad), whose heads get ∇ Σ_k α_k L_k.

Under torchrun (`dist`, a mtlue.distributed.DistContext of several processes, and `share` = this
rank's part n_r/N of the global batch) a gradient-based strategy is the *global* method: the
Jacobian of the global-batch losses is J̄ = Σ_r share_r J_r; it is reduce-scattered along P, the
K × K Gramian J̄J̄ᵀ is all-reduced from the blocks, α comes from it (rank 0's bits, broadcast) and the
combined gradient αᵀJ̄ is all-gathered, so every rank steps exactly as one process on the whole batch
would. Loss-based strategies need no collective here: the training loop averages their gradients
(`reduce_gradients`), which is exact because their total is affine in the losses.
"""

from __future__ import annotations

import torch
from torch import nn

from mtlue.distributed_training import reduce_gradients
from mtlue.errors import ConfigError
from mtlue.weighting.jacobian import GRAD_METHODS, representation_jacobian, shared_jacobian, write_flat_grad

GRAD_SPACES = ("shared", "representation")


class Weighting(nn.Module):
    """Base class: `backward(losses, model, rep) -> weights`, plus an `end_epoch` hook."""

    name = "base"
    uses_gradients = False

    def __init__(self, num_tasks: int, generator: torch.Generator | None = None, grad_space: str = "shared", grad_method: str = "auto", chunk: int = 0, dist=None):
        super().__init__()
        self.dist = dist  # a mtlue.distributed.DistContext, or None for one process
        self.share = 1.0  # this rank's part n_r/N of the global batch (set by the loop each step)
        if grad_space not in GRAD_SPACES:
            raise ConfigError(f"--grad-space {grad_space!r}: one of {', '.join(GRAD_SPACES)}")
        if grad_method not in GRAD_METHODS:
            raise ConfigError(f"grad_method {grad_method!r}: one of {', '.join(GRAD_METHODS)}")
        self.num_tasks = num_tasks
        self.generator = generator if generator is not None else torch.Generator().manual_seed(0)
        self.grad_space = grad_space
        self.grad_method = grad_method
        self.chunk = chunk

    def backward(self, losses: torch.Tensor, model: nn.Module, rep: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def end_epoch(self, mean_losses: torch.Tensor) -> None:
        """Called after each training epoch with the epoch-mean task losses (K,)."""


class LossWeighting(Weighting):
    """A strategy that only rescales the losses: total = Σ_k w_k L_k (or its own formula)."""

    def total_loss(self, losses: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (scalar loss to back-propagate, weights (K,))."""
        raise NotImplementedError

    def backward(self, losses, model, rep):
        total, weights = self.total_loss(losses)
        total.backward()
        return weights.detach()


class GradientWeighting(Weighting):
    """A strategy that picks weights α from the Gram matrix of the per-task gradients."""

    uses_gradients = True
    # The reference back-propagates Σ_k α_k L_k, so each head's gradient is scaled by its task's α_k
    # (FairGrad in LibMTL and the MTL-UE code); otherwise heads get ∇ Σ_k L_k as LibMTL's others do.
    weights_heads = False

    def weights_from_gram(self, gram: torch.Tensor, losses: torch.Tensor) -> torch.Tensor:
        """α (K,) from GGᵀ (K × K, float64 on CPU) and the detached losses; the update is αᵀG."""
        raise NotImplementedError

    def _alpha(self, grads: torch.Tensor, losses: torch.Tensor, gram: torch.Tensor | None = None) -> torch.Tensor:
        gram = (grads @ grads.T if gram is None else gram).detach().double().cpu()
        alpha = self.weights_from_gram(gram, losses.detach().double().cpu())
        return alpha.to(device=grads.device, dtype=grads.dtype)

    def backward(self, losses, model, rep):
        if self.dist is not None and self.dist.distributed:
            return self._global_backward(losses, model, rep)
        task_params = [p for p in model.task_parameters() if p.requires_grad]
        shared_params = [p for p in model.shared_parameters() if p.requires_grad]
        if self.grad_space == "representation":
            rep_jac = representation_jacobian(losses, rep)
            flat = rep_jac.reshape(len(losses), -1)
            alpha = self._alpha(flat, losses)
            shared_update = (alpha @ flat).view_as(rep)
        else:
            grads = shared_jacobian(losses, rep, shared_params, self.grad_method, self.chunk)
            alpha = self._alpha(grads, losses)
        head_loss = (alpha.detach() * losses).sum() if self.weights_heads else losses.sum()
        head_grads = torch.autograd.grad(head_loss, task_params, retain_graph=True, allow_unused=True)
        if self.grad_space == "representation":
            rep.backward(shared_update)
        else:
            write_flat_grad(shared_params, alpha @ grads)
        _add_grads(task_params, head_grads)
        return alpha.detach()

    def _global_backward(self, losses, model, rep):
        """The global method over all ranks' samples (module docstring); every rank gets the same .grad."""
        dist, share = self.dist, float(self.share)
        task_params = [p for p in model.task_parameters() if p.requires_grad]
        shared_params = [p for p in model.shared_parameters() if p.requires_grad]
        global_losses = dist.all_reduce_sum(losses.detach() * share)
        if self.grad_space == "representation":
            # ranks hold different samples, so their representation coordinates are disjoint:
            # the global Gramian is the sum of the ranks' (share-scaled) local ones
            flat = representation_jacobian(losses, rep).reshape(len(losses), -1) * share
            alpha = dist.broadcast(self._alpha(flat, global_losses, dist.all_reduce_sum(flat @ flat.T)))
        else:
            grads = shared_jacobian(losses, rep, shared_params, self.grad_method, self.chunk)
            block, total = _scatter_columns(dist, grads, share)  # this rank's columns of J̄, (K, P/R)
            alpha = dist.broadcast(self._alpha(block, global_losses, dist.all_reduce_sum(block @ block.T)))
        head_loss = (alpha.detach() * losses).sum() if self.weights_heads else losses.sum()
        head_grads = torch.autograd.grad(head_loss * share, task_params, retain_graph=True, allow_unused=True)
        _add_grads(task_params, head_grads)
        if self.grad_space == "representation":
            rep.backward((alpha @ flat).view_as(rep))
            summed = task_params + shared_params  # the heads' and each rank's rep.backward: Σ_r, one collective
        else:
            write_flat_grad(shared_params, dist.all_gather_cat(alpha @ block)[:total])
            summed = task_params
        reduce_gradients(dist, summed, share=1.0)
        return alpha.detach()


def _add_grads(params: list, grads) -> None:
    """Accumulate `grads` (None: no gradient) into the `.grad` of `params`."""
    for p, g in zip(params, grads):
        if g is not None:
            p.grad = g if p.grad is None else p.grad + g


def _scatter_columns(dist, grads: torch.Tensor, share: float) -> tuple[torch.Tensor, int]:
    """Σ_r share_r·grads_r, this rank's block of ⌈P/R⌉ columns (P padded to a multiple of R), and P."""
    k, total = grads.shape
    world = dist.world_size
    width = -(-total // world)
    # (R, K, width): block r holds columns r·width..(r+1)·width of every task
    blocks = grads.new_zeros((world, k, width))
    for r in range(world):
        part = grads[:, r * width: (r + 1) * width]
        blocks[r, :, :part.shape[1]] = part
    blocks.mul_(share)
    return dist.reduce_scatter_sum(blocks.view(world * k, width)).view(k, width), total
