"""export_source: write the splits of any Source into a store, streaming one batch at a time."""

from __future__ import annotations

import math

from mtlue.data.base import Source
from mtlue.store.layout import chunk_rows
from mtlue.store.writer import StoreWriter

BATCH_TARGET_BYTES = 8 * 1024 * 1024


def export_batch_size(image_shape: tuple, shard_size: int) -> int:
    """Samples per batch: about 8 MiB of images, a whole number of image chunks (no partial-chunk rewrites)."""
    rows = chunk_rows(image_shape, 1, shard_size)
    sample_bytes = max(1, math.prod(image_shape))
    return rows * max(1, BATCH_TARGET_BYTES // (sample_bytes * rows))


def export_source(source: Source, store_dir: str, shard_size: int = 10000, overwrite: bool = False,
                  progress: bool = True, splits=None, resume: bool = False, spec: str | None = None,
                  seed: int | None = None) -> dict:
    """Write `splits` (default: all of the source's) of `source` into `store_dir`; returns the manifest."""
    splits = tuple(source.splits() if splits is None else splits)
    for split in splits:
        source.check_split(split)
    batch_size = export_batch_size(source.image_shape, shard_size)
    record = {"name": source.name, "spec": spec, "seed": seed}
    with StoreWriter(store_dir, source.tasks, source.image_shape, overwrite=overwrite, resume=resume) as writer:
        for split in splits:
            def make_batches(start, stop, split=split):
                return source.batches(split, batch_size, start, stop)

            writer.write_split(split, source.size(split), shard_size, make_batches, progress=progress)
        return writer.finish(protection=None, extra={"source": record, "settings": {"shard_size": shard_size}})
