"""A WebDataset release: `<split>/shard-K.tar` with members `<key>.png` and `<key>.json` (index, labels)."""

from __future__ import annotations

import json
import tarfile
from collections import OrderedDict

import numpy as np

from mtlue.data.release.layout import IMAGE_EXTENSIONS, split_files
from mtlue.data.release.table import SplitTable, TableBuilder
from mtlue.errors import StoreError


def read_table(release_dir: str, release: dict, split: str, tasks) -> SplitTable:
    """The split's tar shards, read member by member: each image member's offset and size, no image decoded."""
    builder = TableBuilder(tasks)
    paths = split_files(release_dir, release, split, ".tar")
    file_of, offsets, sizes = [], [], []
    for number, path in enumerate(paths):
        try:
            with tarfile.open(path, "r:") as tar:
                samples = OrderedDict()  # key -> {extension: member}, in the tar's order
                for member in tar:
                    if member.isfile():
                        base, _, extension = member.name.rpartition("/")[2].partition(".")
                        key = member.name.rpartition("/")[0] + "/" + base
                        samples.setdefault(key, {})[extension.lower()] = member
                for key, members in samples.items():
                    where = f"{path}: sample {key.lstrip('/')!r}"
                    image = next((members[e[1:]] for e in IMAGE_EXTENSIONS if e[1:] in members), None)
                    if image is None or "json" not in members:
                        raise StoreError(f"{where}: needs an image member and a .json member "
                                         f"(has {', '.join(sorted(members))})")
                    record = json_record(tar.extractfile(members["json"]).read(), where)
                    builder.add(record.get("index"), record.get("labels") or {}, where)
                    file_of.append(number)
                    offsets.append(image.offset_data)
                    sizes.append(image.size)
        except (tarfile.TarError, OSError) as exc:
            raise StoreError(f"{path}: unreadable tar shard ({exc})") from None
    return builder.table(paths, np.asarray(file_of, np.int64), np.asarray(offsets, np.int64),
                         np.asarray(sizes, np.int64))


def read_image(handles: dict, path: str, offset: int, size: int) -> bytes:
    """The member bytes at `offset`, `size` of tar `path`, through this process's open `handles`."""
    handle = handles.get(path)
    if handle is None:
        handle = handles[path] = open(path, "rb")
    handle.seek(offset)
    return handle.read(size)


def json_record(data: bytes, where: str) -> dict:
    try:
        record = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise StoreError(f"{where}: unreadable .json member ({exc})") from None
    if not isinstance(record, dict):
        raise StoreError(f"{where}: the .json member is not an object")
    return record
