"""A Parquet release: `<split>/*.parquet` parts with an `image` column (PNG bytes, Hugging Face Image) and
`index` and task columns. Needs pyarrow (the [release] extra)."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

from mtlue.data.release.layout import parquet_module, split_files
from mtlue.data.release.table import SplitTable, TableBuilder
from mtlue.errors import StoreError

PART_CACHE_BYTES = 256 * 2**20  # per process: PNG bytes of the Parquet parts read so far


def read_table(release_dir: str, release: dict, split: str, tasks) -> SplitTable:
    """The split's parts' index and task columns; position p is row offset[p] of part files[file_of[p]]."""
    pq = parquet_module(release_dir)
    builder = TableBuilder(tasks)
    paths = split_files(release_dir, release, split, ".parquet")
    file_of, rows = [], []
    for number, path in enumerate(paths):
        columns = ["index", *(t.name for t in tasks)]
        try:
            table = pq.read_table(path, columns=columns)
        except Exception as exc:  # pyarrow raises ArrowInvalid, KeyError, OSError for bad parts
            raise StoreError(f"{path}: unreadable Parquet part ({exc})") from None
        values = {c: table.column(c).to_pylist() for c in columns}
        for row in range(table.num_rows):
            builder.add(values["index"][row], {t.name: values[t.name][row] for t in tasks},
                        f"{path}: row {row}")
        file_of += [number] * table.num_rows
        rows += range(table.num_rows)
    file_of = np.asarray(file_of, np.int64)
    return builder.table(paths, file_of, np.asarray(rows, np.int64), np.full_like(file_of, -1))


def part_images(parts: OrderedDict, path: str, release_dir: str) -> list:
    """The PNG bytes of every row of a Parquet part, kept in `parts` while the parts read hold PART_CACHE_BYTES."""
    images = parts.get(path)
    if images is None:
        pq = parquet_module(release_dir)
        try:
            column = pq.read_table(path, columns=["image"]).column("image").combine_chunks()
            images = column.field("bytes").to_pylist()
        except Exception as exc:
            raise StoreError(f"{path}: cannot read the image column ({exc})") from None
        parts[path] = images
        while len(parts) > 1 and sum(sum(map(len, p)) for p in parts.values()) > PART_CACHE_BYTES:
            parts.popitem(last=False)
    return images
