"""The distributed context: which process this is among how many, passed down explicitly.

cli.py builds one `DistContext` per command from torchrun's variables (RANK, WORLD_SIZE,
LOCAL_RANK) and passes it to the library, which never reads the environment and never starts a
process group itself. Without torchrun the context is `single(device)`: world size 1, and every
collective below returns its input unchanged, so the code path is the same.

Backends: gloo on CPU, nccl on CUDA (one GPU per process, `cuda:LOCAL_RANK`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import torch

# Rank 0 may work alone (train the generator, verify shards) while the others wait at a barrier.
DEFAULT_TIMEOUT = timedelta(hours=24)


@dataclass(frozen=True)
class DistContext:
    """rank / world_size / local_rank of this process, its device and the process-group backend."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    backend: str | None = None  # None: a single process, no process group

    # ---- construction ---------------------------------------------------------------------

    @classmethod
    def single(cls, device: torch.device) -> "DistContext":
        return cls(device=torch.device(device))

    @classmethod
    def start(cls, rank: int, world_size: int, local_rank: int, device: torch.device, init_method: str = "env://",
              timeout: timedelta = DEFAULT_TIMEOUT) -> "DistContext":
        """Join the process group (gloo on CPU, nccl on CUDA); `device` is the requested one, and on CUDA
        the process's own GPU `cuda:local_rank` is used."""
        import torch.distributed as dist

        device = torch.device(device)
        if world_size <= 1:
            return cls.single(device)
        if device.type == "cuda":
            device = torch.device("cuda", local_rank)
            torch.cuda.set_device(device)
            backend = "nccl"
            try:  # device_id (torch >= 2.3) forms the communicator now, so a bad GPU fails at start-up
                dist.init_process_group(backend, init_method=init_method, rank=rank, world_size=world_size,
                                        timeout=timeout, device_id=device)
            except TypeError:
                dist.init_process_group(backend, init_method=init_method, rank=rank, world_size=world_size,
                                        timeout=timeout)
        else:
            backend = "gloo"
            dist.init_process_group(backend, init_method=init_method, rank=rank, world_size=world_size,
                                    timeout=timeout)
        return cls(rank=rank, world_size=world_size, local_rank=local_rank, device=device, backend=backend)

    def close(self) -> None:
        import torch.distributed as dist

        if self.distributed and dist.is_initialized():
            dist.destroy_process_group()

    # ---- facts ----------------------------------------------------------------------------

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def owns(self, shard_id: int) -> bool:
        """Shards are keyed by id, never by rank: this process writes shard_id % world_size == rank."""
        return shard_id % self.world_size == self.rank

    def record(self) -> dict:
        """What a manifest records about the launch."""
        return {"world_size": self.world_size, "backend": self.backend or "none"}

    # ---- collectives (no-ops for one process) ---------------------------------------------

    def _for_backend(self, tensor: torch.Tensor) -> torch.Tensor:
        """A contiguous copy the backend can send: nccl sends CUDA tensors only (this rank's GPU)."""
        if self.backend == "nccl" and tensor.device.type != "cuda":
            return tensor.detach().to(self.device).contiguous()
        return tensor.detach().clone().contiguous()

    def barrier(self) -> None:
        if self.distributed:
            import torch.distributed as dist

            dist.barrier()

    def main_first(self, make):
        """`make()` on rank 0 first (it trains and caches in a work directory), then on the other ranks
        (they load what it cached)."""
        if not self.is_main:
            self.barrier()
        made = make()
        if self.is_main:
            self.barrier()
        return made

    def broadcast_object(self, value, src: int = 0):
        """`value` as rank `src` has it (pickled), on every rank."""
        if not self.distributed:
            return value
        import torch.distributed as dist

        box = [value]
        dist.broadcast_object_list(box, src=src)
        return box[0]

    def all_gather_objects(self, value) -> list:
        """[value of rank 0, value of rank 1, ...] on every rank."""
        if not self.distributed:
            return [value]
        import torch.distributed as dist

        boxes = [None] * self.world_size
        dist.all_gather_object(boxes, value)
        return boxes

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Σ over ranks (a new tensor; the input is left as it was)."""
        if not self.distributed:
            return tensor
        import torch.distributed as dist

        total = self._for_backend(tensor)
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
        return total.to(tensor.device)

    def broadcast(self, tensor: torch.Tensor, src: int = 0) -> torch.Tensor:
        """Rank `src`'s tensor on every rank (a new tensor)."""
        if not self.distributed:
            return tensor
        import torch.distributed as dist

        value = self._for_backend(tensor)
        dist.broadcast(value, src=src)
        return value.to(tensor.device)

    def all_gather_cat(self, tensor: torch.Tensor) -> torch.Tensor:
        """The ranks' equally sized 1-D tensors concatenated in rank order."""
        if not self.distributed:
            return tensor
        import torch.distributed as dist

        value = self._for_backend(tensor)
        parts = [torch.empty_like(value) for _ in range(self.world_size)]
        dist.all_gather(parts, value)
        return torch.cat(parts).to(tensor.device)

    def reduce_scatter_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Σ over ranks of `tensor` (world_size·m, ...), this rank's block m·rank..m·(rank+1) only.

        Falls back to an all-reduce and a slice where the backend has no reduce-scatter."""
        if not self.distributed:
            return tensor
        import torch.distributed as dist

        block = tensor.shape[0] // self.world_size
        value = self._for_backend(tensor)
        out = torch.empty((block,) + tuple(tensor.shape[1:]), dtype=value.dtype, device=value.device)
        scatter = getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor  # renamed in torch 2.14
        try:
            scatter(out, value, op=dist.ReduceOp.SUM)
            return out.to(tensor.device)
        except (RuntimeError, NotImplementedError, ValueError):
            total = self.all_reduce_sum(tensor)
            return total[block * self.rank: block * (self.rank + 1)].clone()


def run_local_group(fn, world_size: int, work_dir, *args, timeout: timedelta = timedelta(minutes=5)) -> None:
    """Run `fn(dist, *args)` in `world_size` spawned CPU processes joined by gloo through a FileStore
    in `work_dir` (tests and benchmarks: no port, no torchrun). `fn` must be a module-level function;
    results go through files. Raises when a process fails (the others are stopped)."""
    import os
    import uuid

    import torch.multiprocessing as mp

    store = os.path.join(os.fspath(work_dir), f"pg-{uuid.uuid4().hex}")
    mp.spawn(_group_member, args=(fn, world_size, store, timeout, args), nprocs=world_size, join=True)


def _group_member(rank: int, fn, world_size: int, store: str, timeout: timedelta, args: tuple) -> None:
    torch.set_num_threads(1)  # as torchrun's OMP_NUM_THREADS=1
    dist = DistContext.start(rank, world_size, rank, torch.device("cpu"), init_method=f"file://{store}",
                             timeout=timeout)
    try:
        fn(dist, *args)
        # leave together: a rank that destroys the group while another is still inside a gloo
        # collective aborts that process ("terminate called without an active exception")
        dist.barrier()
    finally:
        dist.close()
