"""Time per optimiser step of every task weighting, as a ratio to `ew`, on a CelebA-like problem.

K binary tasks (default 40), resnet18, 64-px images, batch 64, random data. Gradient-based
weightings are timed several ways: exact shared-parameter gradients from batched vector–Jacobian
products (`is_grads_batched`, torch's vmap over the K VJPs: mtlue's default on CUDA), the K VJPs one
after another from the representation (`loop`: the default on CPU), representation gradients
(`--grad-space representation`), exact gradients from K sequential backward passes (what the
MTL-UE code and LibMTL do), and the exact Gramian from torchjd's autogram engine, which never
forms the K × P Jacobian, followed by one backward of Σ_k α_k L_k (`gramian (torchjd)`, needs
`pip install torchjd`).
Prints ratios measured in this run; asserts nothing.

    python bench/bench_weighting.py                       # the full setting (meant for a GPU)
    python bench/bench_weighting.py --image-size 32 --batch-size 16 --steps 1   # a CPU-sized run
"""

from __future__ import annotations

import argparse
import copy
import time

import torch

from mtlue.data.base import TaskSpec
from mtlue.models import build_model
from mtlue.models.losses import task_losses
from mtlue.runtime import resolve_device
from mtlue.weighting import WEIGHTINGS, build_weighting

MODES = (("exact", "shared", "auto"), ("exact batched", "shared", "batched"), ("exact loop", "shared", "loop"),
         ("representation", "representation", "auto"), ("K sequential", "shared", "sequential"),
         ("gramian (torchjd)", "shared", "gramian"))


def make_problem(num_tasks: int, backbone: str, image_size: int, batch_size: int, device: torch.device):
    generator = torch.Generator().manual_seed(0)
    tasks = tuple(TaskSpec(f"attr{k:02d}", "binary", 2) for k in range(num_tasks))
    torch.manual_seed(0)
    model = build_model(tasks, backbone, in_channels=3, image_size=image_size).to(device)
    images = torch.rand(batch_size, 3, image_size, image_size, generator=generator).to(device)
    labels = {t.name: torch.randint(0, 2, (batch_size,), generator=generator).to(device) for t in tasks}
    return tasks, model, images, labels


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class GramianBackward:
    """Exact shared-parameter Gramian from torchjd's autogram engine (no K × P Jacobian), α from the
    weighting, then one backward of Σ α_k L_k for the shared parameters and of Σ L_k (FairGrad: Σ α_k L_k)
    for the heads: the same update as the weighting's own backward."""

    def __init__(self, weighting, model):
        from torchjd.autogram import Engine

        self.weighting, self.model = weighting, model
        self.engine = Engine(model.backbone, model.shared_head, batch_dim=None)  # before any forward

    def parameters(self):
        return self.weighting.parameters()

    def backward(self, losses, model, rep):
        gram = self.engine.compute_gramian(losses)
        alpha = self.weighting.weights_from_gram(gram.detach().double().cpu(), losses.detach().double().cpu())
        alpha = alpha.to(device=losses.device, dtype=losses.dtype)
        shared = model.shared_parameters()
        heads = list(model.task_parameters())
        head_loss = (alpha * losses).sum() if self.weighting.weights_heads else losses.sum()
        for p, g in zip(heads, torch.autograd.grad(head_loss, heads, retain_graph=True, allow_unused=True)):
            p.grad = g
        for p, g in zip(shared, torch.autograd.grad((alpha * losses).sum(), shared, allow_unused=True)):
            p.grad = g
        return alpha


def seconds_per_step(model, weighting, tasks, images, labels, device, steps: int) -> float:
    """Mean wall time of forward + weighting.backward + clip + Adam step, after one warm-up step."""
    params = list(model.parameters()) + list(weighting.parameters())
    optimizer = torch.optim.Adam(params, lr=1e-3, weight_decay=1e-4)
    times = []
    for step in range(steps + 1):
        sync(device)
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        rep = model.features(images)
        losses = task_losses(tasks, model.heads_forward(rep), labels)
        weighting.backward(losses, model, rep)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        optimizer.step()
        sync(device)
        if step or steps == 0:
            times.append(time.perf_counter() - start)
    return sum(times) / len(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=40)
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=2, help="timed steps per cell (after one warm-up step)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--weightings", default=",".join(WEIGHTINGS))
    parser.add_argument("--modes", default="exact batched,exact loop,representation,K sequential",
                        help="comma list of: " + ", ".join(m[0] for m in MODES) + " (exact = auto: batched on CUDA, loop on CPU)")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    tasks, model, images, labels = make_problem(args.tasks, args.backbone, args.image_size, args.batch_size, device)
    pristine = copy.deepcopy(model)
    wanted_modes = [m for m in MODES if m[0] in args.modes.split(",")]
    print(f"K={args.tasks} binary tasks, {args.backbone}, {args.image_size} px, batch {args.batch_size}, device {device}, "
          f"{torch.get_num_threads()} threads, {args.steps} timed steps per cell")
    ew = seconds_per_step(model, build_weighting("ew", args.tasks).to(device), tasks, images, labels, device, args.steps)
    print(f"ew: {ew:.3f} s/step")
    header = f"{'weighting':<13}" + "".join(f"{label:>24}" for label, _, _ in wanted_modes)
    print(header)
    print("-" * len(header))
    for name in args.weightings.split(","):
        cells = []
        probe = build_weighting(name, args.tasks)
        for label, grad_space, grad_method in wanted_modes:
            if not probe.uses_gradients and cells:  # loss-based: one cell, no gradient modes
                cells.append(f"{'-':>24}")
                continue
            if grad_method == "gramian":
                try:
                    # the engine hooks the modules it is given: a fresh copy, so no other cell pays for them
                    gram_model = copy.deepcopy(pristine)
                    weighting = GramianBackward(build_weighting(name, args.tasks).to(device), gram_model)
                except ImportError:
                    cells.append(f"{'(no torchjd)':>24}")
                    continue
            else:
                weighting = build_weighting(name, args.tasks, grad_space=grad_space, grad_method=grad_method).to(device)
            timed = gram_model if grad_method == "gramian" else model
            seconds = ew if name == "ew" else seconds_per_step(timed, weighting, tasks, images, labels, device, args.steps)
            cells.append(f"{seconds / ew:>14.2f}x ({seconds:6.2f}s)")
        print(f"{name:<13}" + "".join(cells), flush=True)


if __name__ == "__main__":
    main()
