"""verify_store: check every shard of a store against its manifest; IntegrityError names the bad shard.

Checks: manifest schema, and every file name in it resolves inside the store; each shard exists, its
sha256 matches (and its `.sha256` sidecar, when present), its attributes (schema, split, shard id, shard
count, tasks) and dataset shapes agree with the manifest, its sample count and first/last index match;
no sample index appears twice in a split; each split's VDS file maps exactly the manifest's shards, in
order, for every dataset, and reading its index through it gives the shards' indices; the store holds
no file, directory or link the manifest does not account for.
"""

from __future__ import annotations

import json
import os

import h5py
import numpy as np

from mtlue.errors import IntegrityError, StoreError
from mtlue.store.layout import CHECKSUM_SUFFIX, MANIFEST_NAME, SHARD_SCHEMA, sha256_file
from mtlue.store.manifest import read_manifest, store_file

CHECKS = ("paths", "sha256", "schema", "counts", "index ranges", "unique indices", "vds", "vds sources",
          "no unknown files")


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
        _verify_vds(store_dir, split, record, (total,) + image_shape, indices, manifest["tasks"])
        summary["splits"][split] = {"samples": total, "shards": len(record["shards"])}
    _check_no_unknown_files(store_dir, manifest)
    return summary


def _verify_shard(store_dir: str, shard: dict, attrs: dict, tasks_json: str, image_shape: tuple) -> np.ndarray:
    name = shard["file"]
    path = _resolved(store_dir, name, f"split {attrs['split']!r} shard {attrs['shard_id']}")
    if not os.path.isfile(path):
        raise IntegrityError(f"{name}: shard is missing")
    digest = sha256_file(path)
    if digest != shard["sha256"]:
        raise IntegrityError(f"{name}: sha256 mismatch (manifest {shard['sha256'][:16]}…, file {digest[:16]}…)")
    sidecar = path + CHECKSUM_SUFFIX
    if os.path.isfile(sidecar):
        with open(sidecar, encoding="utf-8", errors="replace") as fh:
            recorded = fh.read().split()[:1]
        if recorded != [digest]:
            raise IntegrityError(f"{name}{CHECKSUM_SUFFIX}: records another sha256 than the shard's")
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


def _resolved(store_dir: str, name, entry: str) -> str:
    try:
        return store_file(store_dir, name, entry)
    except StoreError as exc:
        raise IntegrityError(str(exc)) from None


def _verify_vds(store_dir: str, split: str, record: dict, shape: tuple, indices: list, tasks: list) -> None:
    """The split's VDS maps, for every dataset, exactly the manifest's shards in order, and reads back their indices."""
    from mtlue.store.vds import VDS_SCHEMA

    name = record["vds"]
    path = _resolved(store_dir, name, f"split {split!r} vds")
    if not os.path.isfile(path):
        raise IntegrityError(f"{name}: virtual dataset file is missing")
    expected = ["images", "index"] + [f"{group}/{t['name']}" for group in ("labels", "masks") for t in tasks]
    try:
        with h5py.File(path, "r") as f:
            if f.attrs.get("schema") != VDS_SCHEMA:
                raise IntegrityError(f"{name}: schema {f.attrs.get('schema')!r}, expected {VDS_SCHEMA!r}")
            found = []
            f.visititems(lambda key, obj: found.append(key) if isinstance(obj, h5py.Dataset) else None)
            unknown = sorted(set(found) - set(expected))
            missing = [key for key in expected if key not in found]
            if unknown or missing:
                what = f"holds {unknown[0]!r}, which no shard has" if unknown else f"has no {missing[0]!r}"
                raise IntegrityError(f"{name}: {what}")
            if f["images"].shape != shape:
                raise IntegrityError(f"{name}: images shape {f['images'].shape}, expected {shape}")
            for key in expected:
                _check_vds_sources(name, key, f[key], record["shards"])
            through_vds = f["index"][:]
    except OSError as exc:
        raise IntegrityError(f"{name}: unreadable virtual dataset ({exc})") from None
    if not np.array_equal(through_vds, np.concatenate(indices)):
        raise IntegrityError(f"{name}: reading the index through it does not give the shards' indices "
                             "(a source file is missing or mapped to the wrong rows)")


def _check_vds_sources(name: str, key: str, dataset, shards: list) -> None:
    """`dataset` is virtual and its sources are exactly `shards`' `key` datasets, each on its own rows in order."""
    if not dataset.is_virtual:
        raise IntegrityError(f"{name}: {key} is a plain dataset, not a virtual one over the shards")
    sources = dataset.virtual_sources()
    mapped = []
    for source in sources:
        start, stride, count, block = source.vspace.get_regular_hyperslab()
        rows = (int(start[0]), int(start[0]) + int(count[0]) * int(block[0]))
        if int(count[0]) > 1 and int(stride[0]) != int(block[0]):
            rows = None  # a strided selection is never what the writer makes
        mapped.append((source.file_name, source.dset_name.lstrip("/"), rows))
    wanted, offset = [], 0
    for shard in shards:
        wanted.append((shard["file"], key, (offset, offset + int(shard["count"]))))
        offset += int(shard["count"])
    for position in range(max(len(mapped), len(wanted))):
        got = mapped[position] if position < len(mapped) else None
        want = wanted[position] if position < len(wanted) else None
        if got != want:
            described = "missing" if got is None else f"{got[0]}:{got[1]} on rows {got[2]}"
            implied = "none" if want is None else f"{want[0]}:{want[1]} on rows {want[2]}"
            raise IntegrityError(f"{name}: {key} source {position} is {described}, the manifest implies {implied}")


def _check_no_unknown_files(store_dir: str, manifest: dict) -> None:
    """IntegrityError naming what the store holds beyond manifest.json, the shards (+ their .sha256
    sidecars) and the per-split VDS files; a link is never part of a store."""
    known = {MANIFEST_NAME}
    for record in manifest["splits"].values():
        known.add(record["vds"])
        for shard in record["shards"]:
            known.update((shard["file"], shard["file"] + CHECKSUM_SUFFIX))
    known_dirs = {os.path.dirname(name) for name in known} - {""}
    for name in list(known_dirs):
        while "/" in name:
            name = name.rsplit("/", 1)[0]
            known_dirs.add(name)
    unknown = []
    for root, dirs, files in os.walk(store_dir):  # never follows links
        rel_root = os.path.relpath(root, store_dir).replace(os.sep, "/")
        relative = {entry: entry if rel_root == "." else f"{rel_root}/{entry}" for entry in dirs + files}
        for entry in sorted(dirs) + sorted(files):
            rel = relative[entry]
            if os.path.islink(os.path.join(root, entry)):
                raise IntegrityError(f"{store_dir}: {rel} is a symbolic link; a store holds only its own files")
            if rel not in (known_dirs if entry in dirs else known):
                unknown.append(rel + ("/" if entry in dirs else ""))
        dirs[:] = [d for d in dirs if relative[d] in known_dirs]
    if unknown:
        more = f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else ""
        raise IntegrityError(f"{store_dir}: {unknown[0]}{more} is not part of the store: "
                             "the manifest does not account for it")
