"""Exact data parallelism for mtlue's training loops under torchrun (victims; the MTL-UE generator).

The recipe's batch size stays the *global* batch, whatever the world size: every rank draws the
same global batches (the same seeded sampler) and trains on its own contiguous slice of each, so
the samples, their order and the number of optimiser steps are those of one process.

- Loss-based weightings: each rank back-propagates its mean losses and the gradients are averaged
  with weights share_r = n_r / N (what DDP does for equal slices). Exact, because their total is
  affine in the losses with coefficients that do not depend on the batch (EW, UW, RLW with its
  shared per-step generator; DWA from all-reduced epoch losses).
- Gradient-based weightings combine the ranks' Jacobians themselves (mtlue.weighting.base: the
  global Gramian and the combined gradient), so nothing is averaged here.
- BatchNorm in train mode uses the global batch's statistics (`GlobalBatchNorm`, on CPU and CUDA;
  torch's SyncBatchNorm runs on GPUs only and assumes equal slices), so a model with BatchNorm
  trains as in one process too (`bn_sync = "global"`, recorded in the history and the manifest).
- Random augmentation is drawn for the whole global batch (`on_global_batch`): the same per-sample
  draws from the same seeded generator as one process.
"""

from __future__ import annotations

import torch

from mtlue.errors import ConfigError


class RankSlice(torch.utils.data.Sampler):
    """This rank's contiguous slice of every batch the wrapped batch sampler yields."""

    def __init__(self, batch_sampler, rank: int, world_size: int):
        self.batch_sampler, self.rank, self.world_size = batch_sampler, rank, world_size

    def __iter__(self):
        for batch in self.batch_sampler:
            n = len(batch)
            yield batch[n * self.rank // self.world_size: n * (self.rank + 1) // self.world_size]

    def __len__(self) -> int:
        return len(self.batch_sampler)


class DataParallel:
    """One training loop's data parallelism: the rank's loader, the per-step share, the gradient average."""

    def __init__(self, dist, model: torch.nn.Module, weighting, global_batch: int):
        if global_batch < dist.world_size:
            raise ConfigError(f"--batch-size {global_batch}: the global batch must hold at least one sample per "
                              f"process ({dist.world_size} processes)")
        self.dist, self.model, self.weighting, self.global_batch = dist, model, weighting, int(global_batch)
        self.share = 1.0
        self.rows = (0, 0, 0)  # this step's slice: first row, end row, global batch size
        self.bn_sync = "global" if use_global_batch_norm(model, self) else "none"
        broadcast_module(dist, model)  # the same start on every rank, whatever each initialised
        if weighting is not None:
            broadcast_module(dist, weighting)

    @classmethod
    def of(cls, dist, model, weighting, global_batch: int) -> "DataParallel | None":
        """None for one process (the loop then runs exactly as without torchrun)."""
        if dist is None or not dist.distributed:
            return None
        return cls(dist, model, weighting, global_batch)

    def loader(self, loader: torch.utils.data.DataLoader) -> torch.utils.data.DataLoader:
        """`loader` (its batch sampler over global batches), yielding this rank's slice of each batch."""
        return torch.utils.data.DataLoader(
            loader.dataset, batch_sampler=RankSlice(loader.batch_sampler, self.dist.rank, self.dist.world_size),
            num_workers=loader.num_workers, generator=loader.generator,
            persistent_workers=loader.persistent_workers, collate_fn=loader.collate_fn)

    def begin_step(self, local_count: int) -> None:
        """At the start of each step (before the forward): the share n_r / N (the last, smaller global batch
        too) and this slice's rows in the global batch."""
        counts = self.dist.all_reduce_sum(torch.tensor([float(local_count)], dtype=torch.float64))
        total = int(counts[0])
        self.share = local_count / float(total)
        start = total * self.dist.rank // self.dist.world_size  # RankSlice's rule
        self.rows = (start, start + local_count, total)
        if self.weighting is not None:
            self.weighting.share = self.share

    def on_global_batch(self, fn, x: torch.Tensor, labels: dict):
        """`fn(x, labels) -> (x', labels')` applied to this step's whole global batch, with this rank's
        rows in place and zeros elsewhere, then sliced back: random draws per sample (a crop, a flip)
        are then those one process makes for these samples. After `begin_step`."""
        start, stop, total = self.rows

        def place(t):
            if not torch.is_tensor(t) or t.shape[:1] != x.shape[:1]:
                return t
            return torch.cat([t.new_zeros((start,) + t.shape[1:]), t, t.new_zeros((total - stop,) + t.shape[1:])])

        def take(t):
            return t[start:stop] if torch.is_tensor(t) and t.shape[:1] == (total,) else t

        out, out_labels = fn(place(x), {k: place(v) for k, v in labels.items()})
        return take(out), {k: take(v) for k, v in out_labels.items()}

    def after_backward(self) -> None:
        """Average the gradients of loss-based weightings (gradient-based ones combined them already)."""
        if self.weighting is not None and getattr(self.weighting, "uses_gradients", False):
            return
        params = list(self.model.parameters()) + (list(self.weighting.parameters()) if self.weighting is not None else [])
        reduce_gradients(self.dist, params, self.share)

    def epoch_losses(self, loss_sum: torch.Tensor) -> torch.Tensor:
        """The epoch's summed per-step losses, averaged over the ranks (slices of equal size weigh equally)."""
        return self.dist.all_reduce_sum(loss_sum) / self.dist.world_size

    def gather_labels(self, collected: dict) -> dict:
        """{task: (label arrays, mask arrays)} of every rank (rank order): the epoch's labels, for floors."""
        parts = self.dist.all_gather_objects(collected)
        return {task: ([a for part in parts for a in part[task][0]], [m for part in parts for m in part[task][1]])
                for task in collected}

    def record(self) -> dict:
        """What the history (metrics.json) and a manifest record about the parallel run."""
        world = self.dist.world_size
        gradient = self.weighting is not None and getattr(self.weighting, "uses_gradients", False)
        return {"world_size": world, "backend": self.dist.backend, "global_batch": self.global_batch,
                "per_rank_batch": self.global_batch / world if self.global_batch % world else self.global_batch // world,
                "bn_sync": self.bn_sync,
                "weighting_sync": "global Gramian (reduce-scattered Jacobian)" if gradient else "gradient average"}


def broadcast_module(dist, module: torch.nn.Module) -> None:
    """Rank 0's parameters and buffers on every rank."""
    with torch.no_grad():
        for tensor in list(module.parameters()) + list(module.buffers()):
            tensor.copy_(dist.broadcast(tensor))


def reduce_gradients(dist, params, share: float) -> None:
    """.grad ← Σ_r share_r · .grad_r over ranks (one flat all-reduce); the same .grad on every rank."""
    if dist is None or not dist.distributed:
        return
    params = [p for p in params if p.requires_grad]
    if not params:
        return
    flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params])
    if share != 1.0:
        flat.mul_(share)
    flat = dist.all_reduce_sum(flat)
    offset = 0
    for p in params:  # views of the one reduced buffer, as DDP's gradient_as_bucket_view
        n = p.numel()
        p.grad = flat[offset: offset + n].view_as(p)
        offset += n


class _GlobalBatchNormFunction(torch.autograd.Function):
    """y = γ·(x − μ)/σ + β with μ, σ² of the global batch (Σ over ranks of Σx, Σx², n).

    Backward: rank r's loss is its local mean, and the global loss is Σ_r share_r·L_r, so the global
    ∂L/∂y on rank r is share_r·dy; the sums the BatchNorm gradient needs are all-reduced from those,
    and dx is returned in rank r's local scale (÷ share_r) because the caller averages all gradients
    with the same shares afterwards."""

    @staticmethod
    def forward(ctx, x, weight, bias, eps, parallel, stats):
        dims, shape = [0] + list(range(2, x.dim())), [1, -1] + [1] * (x.dim() - 2)
        count = torch.tensor([x.numel() / x.shape[1]], dtype=x.dtype, device=x.device)
        total = parallel.dist.all_reduce_sum(torch.cat([x.sum(dims), count]))
        n = total[-1]
        mean = total[:-1] / n
        var = parallel.dist.all_reduce_sum(((x - mean.view(shape)) ** 2).sum(dims)) / n  # two passes: no cancellation
        invstd = (var + eps).rsqrt()
        xhat = (x - mean.view(shape)) * invstd.view(shape)
        ctx.save_for_backward(xhat, invstd, weight)
        ctx.parallel, ctx.n, ctx.dims, ctx.shape = parallel, n, dims, shape
        stats.update(mean=mean, var=var, n=n)
        return xhat * weight.view(shape) + bias.view(shape)

    @staticmethod
    def backward(ctx, dy):
        xhat, invstd, weight = ctx.saved_tensors
        share, dims, shape = float(ctx.parallel.share), ctx.dims, ctx.shape
        local_db, local_dw = dy.sum(dims), (dy * xhat).sum(dims)
        sums = ctx.parallel.dist.all_reduce_sum(torch.stack([local_db, local_dw]) * share)
        mean_db, mean_dw = sums / ctx.n
        dx = weight.view(shape) * invstd.view(shape) * (dy - (mean_db.view(shape) + xhat * mean_dw.view(shape)) / share)
        return dx, local_dw, local_db, None, None, None


def _global_batch_norm_forward(norm: torch.nn.modules.batchnorm._BatchNorm, parallel: "DataParallel", x):
    """The BatchNorm layer `norm` with train-mode statistics of the global batch (else its own forward)."""
    if not (norm.training and norm.affine and norm.track_running_stats):
        return type(norm).forward(norm, x)
    stats = {}
    y = _GlobalBatchNormFunction.apply(x, norm.weight, norm.bias, norm.eps, parallel, stats)
    with torch.no_grad():
        mean, var, n = stats["mean"], stats["var"], float(stats["n"])
        momentum = norm.momentum if norm.momentum is not None else 1.0 / float(norm.num_batches_tracked + 1)
        norm.running_mean.mul_(1 - momentum).add_(mean, alpha=momentum)
        norm.running_var.mul_(1 - momentum).add_(var * n / max(n - 1, 1.0), alpha=momentum)
        norm.num_batches_tracked.add_(1)
    return y


def use_global_batch_norm(model: torch.nn.Module, parallel: "DataParallel") -> bool:
    """Give every BatchNorm layer of `model` global-batch statistics (its forward, per instance: the
    parameters, buffers and state-dict keys stay as they are); False when it has none."""
    import functools

    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for norm in norms:
        norm.forward = functools.partial(_global_batch_norm_forward, norm, parallel)
    return bool(norms)
