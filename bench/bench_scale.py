"""Throughput of 1 vs N processes (gloo on CPU, one thread each) for protection and for a victim.

Protection: writing the protected store with a given generator (the shard stage; shards by id, so
the work splits without communication). Victim: one epoch of `mtlue train` under exact data
parallelism (each rank its slice of every global batch, gradients all-reduced every step).
Each rank times its own work inside the process group (process start-up and imports excluded;
they are printed apart). Prints the speed-ups measured in this run; asserts nothing.

    python bench/bench_scale.py                          # 1 vs 2 processes, CPU-sized
    python bench/bench_scale.py --processes 4 --samples 8192 --size 64
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import torch

from mtlue.data import open_source
from mtlue.distributed import DistContext, run_local_group
from mtlue.models.generator import build_generator, save_generator
from mtlue.protect import protect_config
from mtlue.protect.driver import protect_source
from mtlue.train import TrainConfig, train_model

CPU = torch.device("cpu")


def protect_work(dist: DistContext, spec: str, generator: str, store: str, shard_size: int, out: str) -> None:
    config = protect_config({"method": "mtlue", "generator_path": generator, "batch_size": 128, "seed": 0},
                            explicit={"generator_path"})
    source = open_source(spec)
    dist.barrier()
    started = time.perf_counter()
    protect_source(source, store, config, CPU, progress=False, shard_size=shard_size, dist=dist)
    _report(dist, out, time.perf_counter() - started)


def victim_work(dist: DistContext, spec: str, backbone: str, batch: int, out: str) -> None:
    source = open_source(spec)
    config = TrainConfig(backbone=backbone, weighting="ew", epochs=1, batch_size=batch, seed=0)
    dist.barrier()
    started = time.perf_counter()
    train_model(config, source.dataset("train"), source.dataset("test"), source.tasks, CPU, progress=False,
                floor_labels={t.name: source.label_array("train", t.name) for t in source.tasks}, dist=dist)
    _report(dist, out, time.perf_counter() - started)


def _report(dist: DistContext, out: str, seconds: float) -> None:
    times = dist.all_gather_objects(seconds)
    if dist.is_main:
        with open(out, "w") as fh:
            json.dump({"seconds": max(times)}, fh)


def timed(fn, processes: int, work_dir: str, *args) -> tuple[float, float]:
    """(seconds of the work, seconds end to end with process start-up) for `processes` processes."""
    out = os.path.join(work_dir, f"time-{fn.__name__}-{processes}.json")
    started = time.perf_counter()
    if processes == 1:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # as each rank
        try:
            fn(DistContext.single(CPU), *args, out)
        finally:
            torch.set_num_threads(threads)
    else:
        run_local_group(fn, processes, work_dir, *args, out)
    total = time.perf_counter() - started
    with open(out) as fh:
        return json.load(fh)["seconds"], total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--samples", type=int, default=2048, help="train samples of the shapes source")
    parser.add_argument("--size", type=int, default=32, help="image size (px)")
    parser.add_argument("--shard-size", type=int, default=256)
    parser.add_argument("--generator-width", type=int, default=32)
    parser.add_argument("--backbone", default="small_cnn", help="victim backbone")
    parser.add_argument("--batch-size", type=int, default=128, help="victim global batch")
    args = parser.parse_args()
    spec = f"shapes:n={args.samples},size={args.size},seed=0"
    source = open_source(spec)
    count = source.size("train")
    print(f"{spec}: {count} train samples; 1 vs {args.processes} processes, gloo, 1 thread each, "
          f"{os.cpu_count()} CPU cores")
    with tempfile.TemporaryDirectory() as work_dir:
        generator = os.path.join(work_dir, "generator.pt")
        torch.manual_seed(0)
        save_generator(build_generator(source.tasks, source.image_shape, 8 / 255, "cifar",
                                       width=args.generator_width), generator)
        rows = []
        for label, fn, extra in (
                ("protection (shards)", protect_work, lambda n: (spec, generator, os.path.join(work_dir, f"P{n}"),
                                                                 args.shard_size)),
                (f"victim epoch ({args.backbone}, batch {args.batch_size})", victim_work,
                 lambda n: (spec, args.backbone, args.batch_size))):
            one, one_total = timed(fn, 1, work_dir, *extra(1))
            many, many_total = timed(fn, args.processes, work_dir, *extra(args.processes))
            rows.append((label, one, many, one_total, many_total))
    print(f"{'stage':<38}{'1 proc':>10}{f'{args.processes} procs':>10}{'speed-up':>10}"
          f"{'img/s 1':>10}{f'img/s {args.processes}':>10}{'with start-up':>16}")
    for label, one, many, one_total, many_total in rows:
        print(f"{label:<38}{one:>9.1f}s{many:>9.1f}s{one / many:>9.2f}x{count / one:>10.0f}{count / many:>10.0f}"
              f"{one_total / many_total:>15.2f}x")


if __name__ == "__main__":
    main()
