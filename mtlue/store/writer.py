"""StoreWriter: stream a split into checksummed HDF5 shards, then write the VDS files and manifest.json last.

A store is complete iff manifest.json exists. Each shard is written to `NAME.tmp` and renamed when
complete, then its sha256 is recorded beside it (`NAME.sha256`, `sha256sum -c` format) so a resumed
export skips it. An error removes everything this writer created; an interrupt (Ctrl-C) keeps the
finished shards for `resume=True`; a hard kill leaves finished shards and *.tmp files, never a manifest.
"""

from __future__ import annotations

import json
import os
import re
import shutil

import h5py

from mtlue.data.base import TaskSpec
from mtlue.errors import StoreError
from mtlue.store.layout import (
    CHECKSUM_SUFFIX, COMPRESSION, COMPRESSION_LEVEL, MANIFEST_NAME, SHARD_SCHEMA, STORE_SCHEMA, TMP_SUFFIX,
    sha256_file, shard_ranges, shard_relpath, software_versions, vds_name, write_text_atomic,
)
from mtlue.store.manifest import write_manifest
from mtlue.store.shard import write_shard
from mtlue.store.vds import write_split_vds

SPLIT_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
STORE_ENTRY = re.compile(r"^(manifest\.json|[A-Za-z0-9_][A-Za-z0-9_.-]*\.h5)(\.tmp)?$")
SHARD_ENTRY = re.compile(r"^shard-\d{5}-of-\d{5}\.h5(\.tmp|\.sha256|\.sha256\.tmp)?$")


class StoreWriter:
    """Writes one store directory; use as a context manager so a failure leaves no partial store."""

    def __init__(self, store_dir, tasks, image_shape, overwrite: bool = False, resume: bool = False):
        self.store_dir = os.fspath(store_dir)
        self.tasks = tuple(t if isinstance(t, TaskSpec) else TaskSpec.from_json(t) for t in tasks)
        self.image_shape = tuple(int(d) for d in image_shape)
        if len(self.image_shape) != 3:
            raise StoreError(f"{self.store_dir}: image_shape must be (H, W, C), got {image_shape}")
        self.tasks_json = json.dumps([t.to_json() for t in self.tasks])
        self.resume = resume
        self.splits = {}  # split -> manifest record
        self._created = []  # files this writer made, removed on error
        self._created_dirs = []
        self._finished = False
        self._prepare(overwrite, resume)

    # ---- context manager -------------------------------------------------------------------

    def __enter__(self) -> "StoreWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is not None:
            self._fail(exc_type)
        return False

    def abort(self) -> None:
        """Remove every file and directory this writer created (shards, tmp files, VDS, manifest)."""
        for path in reversed(self._created):
            for candidate in (path, path + TMP_SUFFIX):
                if os.path.lexists(candidate):
                    os.remove(candidate)
        self._created.clear()
        for path in reversed(self._created_dirs):
            try:
                os.rmdir(path)
            except OSError:
                pass  # someone else put something there: leave it
        self._created_dirs.clear()

    def _fail(self, exc_type) -> None:
        if issubclass(exc_type, Exception):
            self.abort()
        else:  # KeyboardInterrupt/SystemExit: keep finished shards so resume=True can continue
            for path in self._created:
                if os.path.lexists(path + TMP_SUFFIX):
                    os.remove(path + TMP_SUFFIX)

    # ---- output directory ------------------------------------------------------------------

    def _prepare(self, overwrite: bool, resume: bool) -> None:
        d = self.store_dir
        if not os.path.exists(d):
            os.makedirs(d)
            self._created_dirs.append(d)
            return
        if not os.path.isdir(d):
            raise StoreError(f"{d}: exists and is not a directory")
        if not os.listdir(d):
            return
        if resume:
            self._check_resumable()
            self._remove_store_files(only_incomplete=True)
            return
        if overwrite:
            self._remove_store_files(only_incomplete=False)
            return
        raise StoreError(f"{d}: output directory is not empty; pass --overwrite to replace it, "
                         "or --resume to finish an interrupted export")

    def _store_entries(self) -> list:
        """Paths of the store files in the directory; StoreError when it holds anything else."""
        d, entries = self.store_dir, []
        for name in sorted(os.listdir(d)):
            path = os.path.join(d, name)
            if os.path.isdir(path) and SPLIT_NAME.match(name):
                inner = sorted(os.listdir(path))
                foreign = [n for n in inner if not SHARD_ENTRY.match(n)]
                if foreign:
                    raise StoreError(f"{d}: refusing to replace it: {name}/{foreign[0]} is not part of an mtlue store")
                entries += [os.path.join(path, n) for n in inner] + [path]
            elif os.path.isfile(path) and STORE_ENTRY.match(name) and (
                    not name.endswith(".h5") or _is_split_vds(path)):
                entries.append(path)
            else:
                raise StoreError(f"{d}: refusing to replace it: {name} is not part of an mtlue store")
        return entries

    def _remove_store_files(self, only_incomplete: bool) -> None:
        """Remove the manifest (first, so no reader takes the directory for complete), then tmp files,
        or with only_incomplete=False every store file and split directory."""
        entries = self._store_entries()
        manifest = os.path.join(self.store_dir, MANIFEST_NAME)
        if os.path.exists(manifest):
            os.remove(manifest)
        for path in entries:
            if os.path.isfile(path) and (path.endswith(TMP_SUFFIX) or not only_incomplete):
                os.remove(path)
            elif os.path.isdir(path) and not only_incomplete:
                shutil.rmtree(path)

    def _check_resumable(self) -> None:
        """resume=True continues only a store of the same tasks and image shape."""
        for path in self._store_entries():
            if not (path.endswith(".h5") and os.path.basename(path).startswith("shard-")):
                continue
            try:
                with h5py.File(path, "r") as f:
                    tasks, shape = f.attrs.get("tasks"), f["images"].shape[1:]
            except (OSError, KeyError):
                continue  # an unreadable shard is rewritten anyway
            if tasks != self.tasks_json or tuple(shape) != self.image_shape:
                raise StoreError(f"{path}: cannot resume: this shard holds other tasks or image shape "
                                 "than the export asks for; use --overwrite")

    # ---- writing ---------------------------------------------------------------------------

    def write_split(self, split: str, num_samples: int, shard_size: int, make_batches, progress: bool = True) -> dict:
        """Write positions 0..num_samples-1 of `split` in shards of `shard_size`; returns the split's record.

        `make_batches(start, stop)` yields Batches for positions [start, stop); it is called once per shard
        that is not already complete.
        """
        try:
            return self._write_split(split, int(num_samples), int(shard_size), make_batches, progress)
        except BaseException as exc:
            self._fail(type(exc))
            raise

    def _write_split(self, split, num_samples, shard_size, make_batches, progress) -> dict:
        if not SPLIT_NAME.match(split) or split in ("manifest",):
            raise StoreError(f"{self.store_dir}: bad split name {split!r}")
        if split in self.splits:
            raise StoreError(f"{self.store_dir}: split {split!r} was already written")
        if num_samples < 1:
            raise StoreError(f"{self.store_dir}: split {split!r} has no samples")
        if shard_size < 1:
            raise StoreError(f"{self.store_dir}: shard size must be at least 1, got {shard_size}")
        split_dir = os.path.join(self.store_dir, split)
        if not os.path.isdir(split_dir):
            os.makedirs(split_dir)
            self._created_dirs.append(split_dir)
        ranges = shard_ranges(num_samples, shard_size)
        planned = {os.path.basename(shard_relpath(split, i, len(ranges))) for i in range(len(ranges))}
        for name in os.listdir(split_dir):  # shards of an earlier export with another shard size
            if SHARD_ENTRY.match(name) and name.split(".h5")[0] + ".h5" not in planned:
                os.remove(os.path.join(split_dir, name))
        from tqdm.auto import tqdm

        records = []
        with tqdm(total=num_samples, desc=f"export {split}", unit="img", disable=not progress, leave=False) as bar:
            for shard_id, (start, stop) in enumerate(ranges):
                relpath = shard_relpath(split, shard_id, len(ranges))
                path = os.path.join(self.store_dir, relpath)
                attrs = {"split": split, "shard_id": shard_id, "num_shards": len(ranges)}
                digest = self._complete_shard(path, attrs, stop - start) if self.resume else None
                if digest is None:
                    self._created += [path, path + CHECKSUM_SUFFIX]
                    write_shard(path, make_batches(start, stop), stop - start, start, self.tasks,
                                self.image_shape, attrs, on_rows=bar.update)
                    digest = sha256_file(path)
                    write_text_atomic(path + CHECKSUM_SUFFIX, f"{digest}  {os.path.basename(path)}\n")
                else:
                    bar.update(stop - start)
                records.append(self._shard_record(path, relpath, digest))
        self.splits[split] = {"count": num_samples, "shard_size": shard_size, "vds": vds_name(split),
                              "shards": records}
        return self.splits[split]

    def _complete_shard(self, path: str, attrs: dict, count: int) -> str | None:
        """The sha256 of a finished shard from an earlier run that matches its sidecar and attributes."""
        sidecar = path + CHECKSUM_SUFFIX
        if not (os.path.isfile(path) and os.path.isfile(sidecar)):
            return None
        with open(sidecar, encoding="utf-8") as fh:
            recorded = fh.read().split()[:1]
        digest = sha256_file(path)
        if recorded != [digest]:
            return None
        try:
            with h5py.File(path, "r") as f:
                found = {k: f.attrs.get(k) for k in ("schema", "split", "shard_id", "num_shards", "count", "tasks")}
        except OSError:
            return None
        expected = dict(attrs, schema=SHARD_SCHEMA, count=count, tasks=self.tasks_json)
        return digest if all(found[k] == v for k, v in expected.items()) else None

    @staticmethod
    def _shard_record(path: str, relpath: str, digest: str) -> dict:
        with h5py.File(path, "r") as f:
            index = f["index"]
            count = len(index)
            first, last = (int(index[0]), int(index[-1])) if count else (None, None)
        return {"file": relpath, "sha256": digest, "count": count, "index_first": first, "index_last": last}

    def finish(self, protection: dict | None = None, extra: dict | None = None) -> dict:
        """Write each split's VDS file, then manifest.json (atomically, last); returns the manifest."""
        try:
            return self._finish(protection, extra)
        except BaseException as exc:
            self._fail(type(exc))
            raise

    def _finish(self, protection, extra) -> dict:
        if self._finished:
            raise StoreError(f"{self.store_dir}: finish() was already called")
        if not self.splits:
            raise StoreError(f"{self.store_dir}: no split was written")
        for split, record in self.splits.items():
            self._created.append(os.path.join(self.store_dir, record["vds"]))
            write_split_vds(self.store_dir, split, record["shards"], self.tasks_json)
        manifest = {
            "schema": STORE_SCHEMA,
            "tasks": [t.to_json() for t in self.tasks],
            "image_shape": list(self.image_shape),
            "splits": self.splits,
            "protection": protection,
            "settings": {"compression": COMPRESSION, "compression_level": COMPRESSION_LEVEL, "shuffle": True,
                         "fletcher32": True, "shard_schema": SHARD_SCHEMA},
            "software": software_versions(),
        }
        for key, value in (extra or {}).items():
            if key == "settings":
                manifest["settings"].update(value)
            elif key in manifest:
                raise StoreError(f"{self.store_dir}: extra manifest key {key!r} would replace a store field")
            else:
                manifest[key] = value
        self._created.append(os.path.join(self.store_dir, MANIFEST_NAME))
        write_manifest(self.store_dir, manifest)
        self._finished = True
        return manifest


def _is_split_vds(path: str) -> bool:
    """A top-level .h5 file is part of a store only if it is a split's VDS file (never a user's data file)."""
    from mtlue.store.vds import VDS_SCHEMA

    try:
        with h5py.File(path, "r") as f:
            return f.attrs.get("schema") == VDS_SCHEMA
    except OSError:
        return False
