"""An image-folder release: `<split>/metadata.csv` (file_name, index, one column per task) and one PNG per sample."""

from __future__ import annotations

import csv
import os

import numpy as np

from mtlue.data.release.layout import relative_path, release_path
from mtlue.data.release.table import SplitTable, TableBuilder
from mtlue.errors import StoreError


def read_table(release_dir: str, release: dict, split: str, tasks) -> SplitTable:
    """The split's metadata.csv; the image of position p is the whole file files[p]."""
    path = release_path(release_dir, f"{split}/metadata.csv", f"split {split!r}")
    folder = os.path.dirname(path)
    rows = []
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            missing = [c for c in ("file_name", "index", *(t.name for t in tasks))
                       if c not in (reader.fieldnames or [])]
            if missing:
                raise StoreError(f"{path}: no column {', '.join(map(repr, missing))}")
            rows = list(reader)
    except FileNotFoundError:
        raise StoreError(f"{path}: missing (an image folder release has one metadata.csv per split)") from None
    builder = TableBuilder(tasks)
    files = []
    for row_number, row in enumerate(rows, start=2):
        where = f"{path}: row {row_number}"
        files.append(relative_path(folder, row["file_name"], where))  # verify_release refuses links
        builder.add(row["index"], {t.name: row[t.name] for t in tasks}, where)
    positions = np.arange(len(files), dtype=np.int64)
    return builder.table(files, positions, np.zeros_like(positions), np.full_like(positions, -1))


def read_image(path: str) -> bytes:
    with open(path, "rb") as fh:
        return fh.read()
