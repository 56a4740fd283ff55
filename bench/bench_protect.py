"""Benchmark `mtlue protect` on procedural `shapes` data (prints ratios measured in this run).

(i)  protection images/s (driver: read, δ = G(x, y), apply rule, checks, HDF5 shards) vs the
     generator's forward pass alone  -> the I/O and bookkeeping overhead;
(ii) protection images/s vs per-sample PGD-20 perturbation of the same images through the same
     surrogate (what a per-sample baseline costs);
(iii) peak RSS of a protect run over n vs 10·n images (a fresh subprocess each).
The generator is FRESHLY INITIALISED (untrained; loaded with --generator, so no training is
timed) and the surrogate is an untrained small_cnn: speed does not depend on the weights.

    python bench/bench_protect.py [--n 512] [--size 32] [--width 64] [--batch-size 128]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch


def _setup(n: int, size: int, width: int, tmp: Path):
    from mtlue.data import open_source
    from mtlue.models.generator import build_generator, save_generator

    source = open_source(f"shapes:n={n},size={size},seed=0")
    torch.manual_seed(0)
    generator = build_generator(source.tasks, source.image_shape, 8 / 255, width=width)
    path = tmp / "generator.pt"
    save_generator(generator, path)
    return source, path


def protect_once(n: int, size: int, width: int, batch_size: int, tmp: Path, device) -> float:
    """Seconds for a full protect run (generator loaded, not trained)."""
    from mtlue.protect import protect_config
    from mtlue.protect.driver import protect_source

    source, path = _setup(n, size, width, tmp)
    config = protect_config(dict(method="mtlue", base="tap", batch_size=batch_size, generator_path=str(path), seed=0))
    start = time.perf_counter()
    protect_source(source, tmp / "P", config, device, work_dir=tmp / "P.work", overwrite=True, progress=False,
                   shard_size=1024)
    return time.perf_counter() - start


def generator_forward_only(n: int, size: int, width: int, batch_size: int, tmp: Path, device) -> float:
    """Seconds of G(x, y) alone over the same images (tensors prepared beforehand)."""
    from mtlue.models.generator import load_generator
    from mtlue.data.base import batch_tensors

    source, path = _setup(n, size, width, tmp)
    generator, _ = load_generator(path, device)
    generator.eval()
    batches = [batch_tensors(b, device) for b in source.batches("train", batch_size)]
    start = time.perf_counter()
    with torch.no_grad():
        for x, labels, masks in batches:
            generator(x, labels, masks)
    return time.perf_counter() - start


def pgd_per_sample(n: int, size: int, batch_size: int, device, steps: int = 20) -> float:
    """Seconds of per-sample PGD-20 (L∞ 8/255, step 0.8/255) with TAP's targets through an untrained small_cnn:
    the attack the `--method tap` baseline runs, at 20 steps."""
    from mtlue.attacks import PGD
    from mtlue.data import open_source
    from mtlue.data.base import batch_tensors
    from mtlue.models.mtl import build_model
    from mtlue.protect.objectives import base_targets
    from mtlue.protect.surrogate import freeze

    source = open_source(f"shapes:n={n},size={size},seed=0")
    torch.manual_seed(0)
    model = freeze(build_model(source.tasks, "small_cnn", source.image_shape[2], source.image_shape[0]).to(device))
    batches = [batch_tensors(b, device) for b in source.batches("train", batch_size)]
    start = time.perf_counter()
    for x, labels, masks in batches:
        targets, targeted = base_targets("tap", source.tasks, labels)
        PGD(model, eps=8 / 255, alpha=0.8 / 255, steps=steps, random_start=False, objective="total",
            targeted=targeted)(x, targets, masks)
    return time.perf_counter() - start


def child_peak_rss(n: int, size: int, width: int, batch_size: int) -> int:
    """Run one protect in a fresh interpreter; its peak RSS in MiB."""
    code = (f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import bench_protect as b, tempfile, "
            f"pathlib, torch, resource; t = pathlib.Path(tempfile.mkdtemp()); "
            f"b.protect_once({n}, {size}, {width}, {batch_size}, t, torch.device('cpu')); "
            f"print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return int(out.stdout.strip().splitlines()[-1]) // 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=512, help="train images (shapes)")
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--width", type=int, default=64, help="generator stem channels (paper 64)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--skip-rss", action="store_true")
    args = parser.parse_args()
    device = torch.device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        protect_once(min(args.n, 64), args.size, args.width, args.batch_size, tmp, device)  # warm-up (imports, caches)
        protect_s = protect_once(args.n, args.size, args.width, args.batch_size, tmp, device)
        forward_s = generator_forward_only(args.n, args.size, args.width, args.batch_size, tmp, device)
        pgd_s = pgd_per_sample(args.n, args.size, args.batch_size, device)
    result = {"n": args.n, "size": args.size, "generator_width": args.width, "device": str(device),
              "threads": torch.get_num_threads(), "generator": "freshly initialised (untrained)",
              "protect_images_per_s": args.n / protect_s, "generator_forward_images_per_s": args.n / forward_s,
              "pgd20_images_per_s": args.n / pgd_s,
              "protect_over_forward": forward_s / protect_s, "protect_over_pgd20": pgd_s / protect_s}
    print(f"protect          {result['protect_images_per_s']:9.1f} img/s  (store written, checks on)")
    print(f"generator fwd    {result['generator_forward_images_per_s']:9.1f} img/s  -> protect runs at "
          f"{result['protect_over_forward']:.2f}x the bare forward pass")
    print(f"PGD-20 per-sample{result['pgd20_images_per_s']:9.1f} img/s  -> protect is {result['protect_over_pgd20']:.2f}x "
          "faster than PGD-20 through the same surrogate")
    if not args.skip_rss:
        small = child_peak_rss(args.n, args.size, args.width, args.batch_size)
        large = child_peak_rss(10 * args.n, args.size, args.width, args.batch_size)
        result.update(peak_rss_mib_n=small, peak_rss_mib_10n=large, rss_ratio=large / max(small, 1))
        print(f"peak RSS         {small} MiB for n={args.n}, {large} MiB for 10n={10 * args.n} "
              f"(ratio {large / max(small, 1):.2f})")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
