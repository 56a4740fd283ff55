"""Per-step cost of the multi-task attack objectives, as a ratio to `total`, for K = 4 and K = 40 tasks.

One attack step = one forward pass plus the input gradient(s) of the objective. `total` and `single` need
one backward; `dgba` needs per-sample task weights 1/ℓ_t, which one backward of Σ ℓ_tb/stopgrad(ℓ_tb) gives
("auto") — compared with K per-task gradients from one batched VJP (is_grads_batched) or a K-backward loop;
`signsum` needs the K per-task gradients themselves. Prints a table; asserts nothing about timings.

    python bench/bench_attacks.py [--device cpu] [--batch-size 64] [--repeats 5] [--tasks 4,40]
"""

from __future__ import annotations

import argparse
import time

import torch

from mtlue.attacks.objectives import clean_labels, objective_direction, parse_objective
from mtlue.data.base import TaskSpec
from mtlue.models import build_model
from mtlue.runtime import resolve_device

VARIANTS = (
    ("total", "total", "auto"),
    ("single", "single:t0", "auto"),
    ("dgba (1 backward)", "dgba", "auto"),
    ("dgba (batched VJP)", "dgba", "batched"),
    ("dgba (K-loop)", "dgba", "loop"),
    ("signsum (batched VJP)", "signsum", "batched"),
    ("signsum (K-loop)", "signsum", "loop"),
)


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_step(model, images, labels, masks, objective, per_task, device) -> float:
    """Wall time of one objective_direction call (forward + input gradients)."""
    synchronize(device)
    start = time.perf_counter()
    objective_direction(model, images, labels, masks, objective, per_task=per_task)
    synchronize(device)
    return time.perf_counter() - start


def bench(num_tasks, batch_size, repeats, device, backbone):
    """Best-of-`repeats` seconds per variant; variants interleaved so background load hits them alike."""
    tasks = tuple(TaskSpec(f"t{i}", "multiclass", 10) for i in range(num_tasks))
    generator = torch.Generator().manual_seed(0)
    model = build_model(tasks, backbone, in_channels=3, image_size=32).to(device).eval()
    images = torch.rand(batch_size, 3, 32, 32, generator=generator).to(device)
    raw = {t.name: torch.randint(0, 10, (batch_size,), generator=generator) for t in tasks}
    labels, masks = clean_labels(tasks, raw, None, device)
    objectives = {label: parse_objective(spec, tasks) for label, spec, _ in VARIANTS}
    times = {label: [] for label, _, _ in VARIANTS}
    for repeat in range(repeats + 1):
        for label, _, per_task in VARIANTS:
            seconds = time_step(model, images, labels, masks, objectives[label], per_task, device)
            if repeat > 0:  # the first round warms up kernels and the allocator
                times[label].append(seconds)
    return {label: min(values) for label, values in times.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tasks", default="4,40", help="comma-separated task counts K")
    parser.add_argument("--backbone", default="small_cnn")
    args = parser.parse_args()
    device = resolve_device(args.device)
    counts = [int(k) for k in args.tasks.split(",")]
    results = {k: bench(k, args.batch_size, args.repeats, device, args.backbone) for k in counts}
    print(f"per-step cost relative to 'total' ({args.backbone}, batch {args.batch_size}, 32 px, {device}, "
          f"best of {args.repeats}; torch {torch.__version__}, {torch.get_num_threads()} threads)")
    header = f"{'objective':<24}" + "".join(f"{'K=' + str(k) + ' ms':>12}{'ratio':>8}" for k in counts)
    print(header)
    for label, _, _ in VARIANTS:
        cells = "".join(f"{results[k][label] * 1e3:>12.1f}{results[k][label] / results[k]['total']:>8.2f}" for k in counts)
        print(f"{label:<24}{cells}")


if __name__ == "__main__":
    main()
