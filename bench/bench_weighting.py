"""Time per optimiser step of every task weighting, as a ratio to `ew`, on a CelebA-like problem.

K binary tasks (default 40), resnet18, 64-px images, batch 64, random data. Gradient-based
weightings are timed three ways: exact shared-parameter gradients from batched vector–Jacobian
products (mtlue's default), representation gradients (`--grad-space representation`), and exact
gradients from K sequential backward passes (what the MTL-UE code and LibMTL do).
Prints ratios measured in this run; asserts nothing.

    python bench/bench_weighting.py                       # the full setting (meant for a GPU)
    python bench/bench_weighting.py --image-size 32 --batch-size 16 --steps 1   # a CPU-sized run
"""

from __future__ import annotations

import argparse
import time

import torch

from mtlue.data.base import TaskSpec
from mtlue.models import build_model
from mtlue.models.losses import task_losses
from mtlue.runtime import resolve_device
from mtlue.weighting import WEIGHTINGS, build_weighting

MODES = (("exact", "shared", "auto"), ("exact batched", "shared", "batched"), ("exact loop", "shared", "loop"),
         ("representation", "representation", "auto"), ("K sequential", "shared", "sequential"))


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
            weighting = build_weighting(name, args.tasks, grad_space=grad_space, grad_method=grad_method).to(device)
            seconds = ew if name == "ew" else seconds_per_step(model, weighting, tasks, images, labels, device, args.steps)
            cells.append(f"{seconds / ew:>14.2f}x ({seconds:6.2f}s)")
        print(f"{name:<13}" + "".join(cells), flush=True)


if __name__ == "__main__":
    main()
