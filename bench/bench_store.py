"""Store benchmark: export throughput against raw h5py writes, and peak memory as the split grows.

(i)  throughput ratio = raw h5py write time / store write time for the train split of
     shapes:n=20000,size=64 (same gzip+shuffle+fletcher32 filters, same chunks, same shard files).
     "store-only" feeds pre-generated batches through StoreWriter (validation, labels, sha256, VDS,
     manifest included); "end-to-end" is export_source from the spec (includes generating the images).
(ii) peak RSS ratio of an export of n=20,000 to one of n=2,000, each in a fresh subprocess.
Targets: throughput ratio >= 0.7, RSS ratio <= 1.3. Prints numbers measured in this run; asserts nothing.

    python bench/bench_store.py [--n 20000] [--small 2000] [--size 64]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time


def export_train(spec: str, store_dir: str, workers: int = 0) -> float:
    from mtlue.data import open_source
    from mtlue.store import export_source

    started = time.perf_counter()
    export_source(open_source(spec), store_dir, splits=["train"], progress=False, workers=workers)
    return time.perf_counter() - started


def rss_child(spec: str) -> None:
    """Run in a fresh process: print peak RSS (KiB) after imports and after exporting `spec`."""
    import mtlue.data  # noqa: F401  (imports torch: part of the baseline, not of the export)
    import mtlue.store  # noqa: F401

    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with tempfile.TemporaryDirectory() as tmp:
        export_train(spec, os.path.join(tmp, "store"))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"baseline_kib": baseline, "peak_kib": peak}))


def measure_rss(spec: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--rss-child", spec], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def raw_write(images, store_dir: str, shard_size: int) -> float:
    """Write the materialised images with plain h5py: same chunks, filters and shard files as the store."""
    import h5py

    from mtlue.store.layout import COMPRESSION, COMPRESSION_LEVEL, chunk_rows

    os.makedirs(store_dir)
    started = time.perf_counter()
    for shard, lo in enumerate(range(0, len(images), shard_size)):
        part = images[lo:lo + shard_size]
        rows = chunk_rows(part.shape[1:], 1, len(part))
        with h5py.File(os.path.join(store_dir, f"raw-{shard}.h5"), "w") as f:
            f.create_dataset("images", data=part, chunks=(rows,) + part.shape[1:], compression=COMPRESSION,
                             compression_opts=COMPRESSION_LEVEL, shuffle=True, fletcher32=True, track_times=False)
    return time.perf_counter() - started


def store_only(batches, tasks, image_shape, store_dir: str, shard_size: int, count: int) -> float:
    """Feed pre-generated batches through StoreWriter (no generator time in the measurement)."""
    from mtlue.store import StoreWriter

    def make_batches(start, stop):
        for batch in batches:
            if start <= batch.index[0] - batches[0].index[0] < stop:
                yield batch

    started = time.perf_counter()
    with StoreWriter(store_dir, tasks, image_shape) as writer:
        writer.write_split("train", count, shard_size, make_batches, progress=False)
        writer.finish()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--small", type=int, default=2000)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--rss-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_child:
        rss_child(args.rss_child)
        return

    # Memory first, while this process is small: Linux carries a parent's peak RSS into a child's ru_maxrss.
    small = measure_rss(f"shapes:n={args.small},size={args.size}")
    large = measure_rss(f"shapes:n={args.n},size={args.size}")
    growth_small = small["peak_kib"] - small["baseline_kib"]
    growth_large = large["peak_kib"] - large["baseline_kib"]

    import numpy as np

    from mtlue.data import open_source
    from mtlue.store.export import export_batch_size

    spec = f"shapes:n={args.n},size={args.size}"
    source = open_source(spec)
    shard_size = 10000
    batch_size = export_batch_size(source.image_shape, shard_size)
    count = source.size("train")
    started = time.perf_counter()
    # batches aligned to shard starts, as export_source asks for them
    batches = [b for lo in range(0, count, shard_size)
               for b in source.batches("train", batch_size, lo, min(lo + shard_size, count))]
    generate_s = time.perf_counter() - started
    images = np.concatenate([b.images for b in batches])
    mib = images.nbytes / 2**20
    with tempfile.TemporaryDirectory() as tmp:
        raw_s = raw_write(images, os.path.join(tmp, "raw"), shard_size)
        del images
        store_s = store_only(batches, source.tasks, source.image_shape, os.path.join(tmp, "store"), shard_size, count)
        del batches
        e2e_s = export_train(spec, os.path.join(tmp, "e2e"))
        e2e_workers_s = export_train(spec, os.path.join(tmp, "e2e-workers"), workers=1)
    print(f"{spec}: train split {count} images, {mib:.0f} MiB uint8, shard size {shard_size}")
    print(f"  generate images (shapes source)   {generate_s:7.2f} s")
    print(f"  raw h5py write (same filters)     {raw_s:7.2f} s   {mib / raw_s:7.1f} MiB/s")
    print(f"  StoreWriter, pre-generated input  {store_s:7.2f} s   {mib / store_s:7.1f} MiB/s")
    print(f"  export_source end-to-end          {e2e_s:7.2f} s   {mib / e2e_s:7.1f} MiB/s")
    print(f"  export_source --workers 1         {e2e_workers_s:7.2f} s   {mib / e2e_workers_s:7.1f} MiB/s")
    print(f"  throughput ratio store-only  (raw/store)  {raw_s / store_s:.2f}   target >= 0.7")
    print(f"  throughput ratio end-to-end  (raw/export) {raw_s / e2e_s:.2f}   (includes generating the images, "
          f"one process)")
    print(f"  throughput ratio end-to-end, 1 worker     {raw_s / e2e_workers_s:.2f}   (images generated in a worker "
          f"process while this one writes; the CLI default)")

    for n, rss in ((args.small, small), (args.n, large)):
        print(f"peak RSS n={n}: {rss['peak_kib'] / 1024:.0f} MiB (after imports {rss['baseline_kib'] / 1024:.0f} MiB)")
    print(f"  peak RSS ratio n={args.n}/n={args.small}  {large['peak_kib'] / small['peak_kib']:.2f}   target <= 1.3")
    print(f"  growth during export (peak - after imports): n={args.small} {growth_small / 1024:.0f} MiB, "
          f"n={args.n} {growth_large / 1024:.0f} MiB")

if __name__ == "__main__":
    main()
