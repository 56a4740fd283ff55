"""Benchmark the defense-aware generator: each `--robust` option's training cost as a ratio to plain training.

One MTL-UE EM protect run per setting on procedural RGB `shapes` (so `gray` applies), all in this run
and on this machine: plain (robust = none), each option alone, and all five together. Each run trains
the generator for --epochs passes over the n train samples (generator steps, one surrogate pass, the
stop test) and writes the n-sample store, so the ratio is what `mtlue protect --robust X` costs on top
of `mtlue protect`. One option alone is drawn on half the batches (the draw is uniform over none + the
options), so `at` alone is its PGD adversary on every other batch. A discarded warm-up run comes
first (imports, kernel set-up), and each setting's time is the best of --repeats runs.

    python bench/bench_robust.py [--n 1024] [--size 32] [--epochs 1] [--width 16] [--repeats 2] [--device cpu]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

SETTINGS = ((), ("jpeg",), ("bdr",), ("gray",), ("erase",), ("at",), ("jpeg", "bdr", "gray", "erase", "at"))


def protect_seconds(robust: tuple, n: int, size: int, epochs: int, width: int, tmp: Path, device) -> float:
    """Wall seconds of one protect run (generator trained from scratch) with these robust options."""
    from mtlue.data import open_source
    from mtlue.protect import protect_config
    from mtlue.protect.config import SurrogateConfig
    from mtlue.protect.driver import protect_source

    source = open_source(f"shapes:n={n},size={size},seed=0")
    config = protect_config(dict(method="mtlue", base="em", epochs=epochs, batch_size=128, generator_width=width,
                                 seed=0, robust=list(robust), surrogate=SurrogateConfig(backbone="small_cnn")))
    name = "-".join(robust) or "plain"
    start = time.perf_counter()
    protect_source(source, tmp / name, config, device, work_dir=tmp / f"{name}.work", overwrite=True,
                   progress=False, shard_size=1024)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1024)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        protect_seconds((), args.n, args.size, args.epochs, args.width, Path(tmp), device)  # warm-up
        seconds = {robust: min(protect_seconds(robust, args.n, args.size, args.epochs, args.width, Path(tmp), device)
                               for _ in range(args.repeats)) for robust in SETTINGS}
    plain = seconds[()]
    print(f"MTL-UE EM generator training on shapes (n={args.n}, {args.size} px, {args.epochs} passes, "
          f"width {args.width}, {device}, best of {args.repeats}); plain = {plain:.1f} s")
    print(f"{'--robust':<24} {'seconds':>8} {'x plain':>8}")
    for robust, value in seconds.items():
        print(f"{','.join(robust) or '(none)':<24} {value:>8.1f} {value / plain:>8.2f}")


if __name__ == "__main__":
    main()
