"""verify_store: check every shard of a store against its manifest; IntegrityError names the bad shard.

Checks: manifest schema; each shard exists, its sha256 matches, its attributes (schema, split, shard id,
shard count, tasks) and dataset shapes agree with the manifest, its sample count and first/last index
match; no sample index appears twice in a split; each split's VDS file exists with the split's shape.
"""

from __future__ import annotations

import json
import os

import h5py
import numpy as np

from mtlue.errors import IntegrityError, StoreError
from mtlue.store.layout import SHARD_SCHEMA, sha256_file
from mtlue.store.manifest import read_manifest

CHECKS = ("sha256", "schema", "counts", "index ranges", "unique indices", "vds")


def verify_store(store_dir: str) -> dict:
    """Verify a complete store; returns {"ok": True, "checks": […], "splits": {split: {samples, shards}}}."""
    try:
        manifest = read_manifest(store_dir)
    except StoreError as exc:
        raise IntegrityError(str(exc)) from None
    tasks_json = json.dumps(manifest["tasks"])
    image_shape = tuple(manifest["image_shape"])
    summary = {"ok": True, "checks": list(CHECKS), "splits": {}}
    for split, record in manifest["splits"].items():
        indices = []
        for shard_id, shard in enumerate(record["shards"]):
            attrs = {"split": split, "shard_id": shard_id, "num_shards": len(record["shards"])}
            indices.append(_verify_shard(store_dir, shard, attrs, tasks_json, image_shape))
        _check_unique(split, record["shards"], indices)
        total = sum(len(i) for i in indices)
        if total != record["count"]:
            raise IntegrityError(f"{store_dir}: split {split!r} holds {total} samples, manifest says {record['count']}")
        _verify_vds(store_dir, record, (total,) + image_shape)
        summary["splits"][split] = {"samples": total, "shards": len(record["shards"])}
    return summary


def _verify_shard(store_dir: str, shard: dict, attrs: dict, tasks_json: str, image_shape: tuple) -> np.ndarray:
    name = shard["file"]
    path = os.path.join(store_dir, name)
    if not os.path.isfile(path):
        raise IntegrityError(f"{name}: shard is missing")
    digest = sha256_file(path)
    if digest != shard["sha256"]:
        raise IntegrityError(f"{name}: sha256 mismatch (manifest {shard['sha256'][:16]}…, file {digest[:16]}…)")
    try:
        with h5py.File(path, "r") as f:
            if f.attrs.get("schema") != SHARD_SCHEMA:
                raise IntegrityError(f"{name}: schema {f.attrs.get('schema')!r}, expected {SHARD_SCHEMA!r}")
            for key, value in dict(attrs, tasks=tasks_json).items():
                if f.attrs.get(key) != value:
                    raise IntegrityError(f"{name}: attribute {key}={f.attrs.get(key)!r}, manifest implies {value!r}")
            count = shard["count"]
            if f["images"].shape != (count,) + image_shape or f["images"].dtype != np.uint8:
                raise IntegrityError(f"{name}: images {f['images'].dtype} {f['images'].shape}, "
                                     f"manifest says uint8 {(count,) + image_shape}")
            for task in json.loads(tasks_json):
                for group in ("labels", "masks"):
                    if task["name"] not in f.get(group, {}) or len(f[group][task["name"]]) != count:
                        raise IntegrityError(f"{name}: {group}/{task['name']} is missing or does not hold {count} rows")
            index = f["index"][:]
    except OSError as exc:
        raise IntegrityError(f"{name}: unreadable HDF5 ({exc})") from None
    if len(index) != count:
        raise IntegrityError(f"{name}: {len(index)} indices, manifest says {count}")
    if count and (int(index[0]), int(index[-1])) != (shard["index_first"], shard["index_last"]):
        raise IntegrityError(f"{name}: index range {int(index[0])}..{int(index[-1])}, "
                             f"manifest says {shard['index_first']}..{shard['index_last']}")
    return index


def _check_unique(split: str, shards: list, indices: list) -> None:
    if not indices:
        return
    owner = np.concatenate([np.full(len(i), k) for k, i in enumerate(indices)])
    values = np.concatenate(indices)
    order = np.argsort(values, kind="stable")
    repeated = np.flatnonzero(values[order][1:] == values[order][:-1])
    if len(repeated):
        first, second = order[repeated[0]], order[repeated[0] + 1]
        a, b = shards[owner[first]]["file"], shards[owner[second]]["file"]
        where = a if a == b else f"{b} (also in {a})"
        raise IntegrityError(f"{where}: sample index {int(values[first])} appears twice in split {split!r}")


def _verify_vds(store_dir: str, record: dict, shape: tuple) -> None:
    name = record["vds"]
    path = os.path.join(store_dir, name)
    if not os.path.isfile(path):
        raise IntegrityError(f"{name}: virtual dataset file is missing")
    try:
        with h5py.File(path, "r") as f:
            found = f["images"].shape
    except (OSError, KeyError) as exc:
        raise IntegrityError(f"{name}: unreadable virtual dataset ({exc})") from None
    if found != shape:
        raise IntegrityError(f"{name}: images shape {found}, expected {shape}")
