"""export_source: write the splits of any Source into a store, streaming one batch at a time."""

from __future__ import annotations

import math
import multiprocessing
from collections import deque
from concurrent.futures import ProcessPoolExecutor

from mtlue.data.base import Source
from mtlue.store.layout import chunk_rows
from mtlue.store.writer import StoreWriter

BATCH_TARGET_BYTES = 8 * 1024 * 1024


def export_batch_size(image_shape: tuple, shard_size: int) -> int:
    """Samples per batch: about 8 MiB of images, a whole number of image chunks (no partial-chunk rewrites)."""
    rows = chunk_rows(image_shape, 1, shard_size)
    sample_bytes = max(1, math.prod(image_shape))
    return rows * max(1, BATCH_TARGET_BYTES // (sample_bytes * rows))


_worker_source = None


def _set_worker_source(source: Source) -> None:
    global _worker_source
    _worker_source = source


def _read_batch(split: str, start: int, stop: int):
    return next(_worker_source.batches(split, stop - start, start, stop))


def prefetched_batches(pool: ProcessPoolExecutor, split: str, batch_size: int, start: int, stop: int, depth: int):
    """Batches of [start, stop) decoded by `pool`, in order, at most `depth` in flight (bounded memory)."""
    pending = deque()
    for lo in range(start, stop, batch_size):
        pending.append(pool.submit(_read_batch, split, lo, min(lo + batch_size, stop)))
        if len(pending) > depth:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


def export_source(source: Source, store_dir: str, shard_size: int = 10000, overwrite: bool = False,
                  progress: bool = True, splits=None, resume: bool = False, spec: str | None = None,
                  seed: int | None = None, workers: int = 0) -> dict:
    """Write `splits` (default: all of the source's) of `source` into `store_dir`; returns the manifest.

    With `workers` > 0, that many processes decode/generate batches while this one compresses and
    writes them; the bytes written are the same either way.
    """
    splits = tuple(source.splits() if splits is None else splits)
    for split in splits:
        source.check_split(split)
    batch_size = export_batch_size(source.image_shape, shard_size)
    record = source.origin_record()
    record.update({"spec": spec or record.get("spec"), "seed": seed})
    pool = None
    if workers > 0:
        # forkserver/spawn, never fork: a forked worker would inherit the open shard file and its HDF5 lock
        methods = multiprocessing.get_all_start_methods()
        context = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
        pool = ProcessPoolExecutor(workers, mp_context=context, initializer=_set_worker_source, initargs=(source,))
    try:
        with StoreWriter(store_dir, source.tasks, source.image_shape, overwrite=overwrite, resume=resume) as writer:
            for split in splits:
                def make_batches(start, stop, split=split):
                    if pool is None:
                        return source.batches(split, batch_size, start, stop)
                    return prefetched_batches(pool, split, batch_size, start, stop, depth=2 * workers)

                writer.write_split(split, source.size(split), shard_size, make_batches, progress=progress)
            return writer.finish(protection=None, extra={"source": record, "settings": {"shard_size": shard_size}})
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
