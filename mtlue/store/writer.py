"""StoreWriter: stream a split into checksummed HDF5 shards, then write the VDS files and manifest.json last.

A store is complete iff manifest.json exists. Each shard is written to `NAME.tmp` and renamed when
complete, then its sha256 is recorded beside it (`NAME.sha256`, `sha256sum -c` format) so a resumed
export skips it. An error removes everything this writer created; an interrupt (Ctrl-C) keeps the
finished shards for `resume=True`; a hard kill leaves finished shards and *.tmp files, never a manifest.

`overwrite=True` never touches the old store until the new one is complete: the new store is built in
a sibling directory `STORE.partial-XXXXXXXX`, and `finish()` renames the old store aside, renames the
new one into place and only then removes the old one. Any failure (or interrupt) before that removes
the sibling and leaves the old store as it was. Nothing is ever written or deleted through a symbolic
link: a store whose parts are links is refused.

A hard kill (SIGKILL, power loss) during an overwrite can leave `STORE.partial-*` (the unfinished new
store) and, if it came between the two renames, no `STORE` at all, the old one sitting in
`STORE.replaced-*`. The next writer on STORE (export, protect, `mtlue run`'s shards stage) first calls
`mtlue.store.recovery.recover_interrupted_overwrite`, which makes it as if the killed overwrite had never started:
- no `STORE` but one `STORE.replaced-*`: the old store is renamed back into place, even when a
  complete `STORE.partial-*` is beside it (the killed command never reported success, so its
  result is not trusted; the next overwrite builds it again);
- every `STORE.partial-*` is removed, and a `STORE.replaced-*` beside a complete `STORE` (the kill
  came while the old store was being deleted) too, but only a real directory that holds nothing
  but store files: a link, or a folder with anything else in it, is left alone.
A writer holds an advisory lock (flock) on its staging directory while it builds it, so a live
overwrite by another process is never taken for a killed one: the second writer is refused.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil

import h5py

from mtlue.data.base import TaskSpec
from mtlue.errors import StoreError
from mtlue.store.entries import SHARD_ENTRY, SPLIT_NAME, check_output_dir, store_entries
from mtlue.store.layout import (
    CHECKSUM_SUFFIX, COMPRESSION, COMPRESSION_LEVEL, MANIFEST_NAME, SHARD_SCHEMA, STORE_SCHEMA, TMP_SUFFIX,
    sha256_file, shard_ranges, shard_relpath, software_versions, vds_name, write_text_atomic,
)
from mtlue.store.manifest import without_local_paths, write_manifest
from mtlue.store.recovery import lock_directory, recover_interrupted_overwrite
from mtlue.store.shard import write_shard
from mtlue.store.vds import write_split_vds

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
        self._staging = None  # overwrite: the sibling directory the new store is built in
        self._staging_lock = None  # the open, flock-ed staging directory while this writer builds it
        self.write_dir = self.store_dir  # where files go: the store itself, or the staging directory
        self._prepare(overwrite, resume)

    @classmethod
    def joining(cls, write_dir, tasks, image_shape) -> "StoreWriter":
        """A writer for the shards another process (rank 0 under torchrun) is building in `write_dir`:
        it writes its own shards there and never prepares, finishes or removes the directory."""
        writer = cls.__new__(cls)
        writer.store_dir = writer.write_dir = os.fspath(write_dir)
        writer.tasks = tuple(t if isinstance(t, TaskSpec) else TaskSpec.from_json(t) for t in tasks)
        writer.image_shape = tuple(int(d) for d in image_shape)
        writer.tasks_json = json.dumps([t.to_json() for t in writer.tasks])
        writer.resume = True  # a finished shard of an earlier attempt is kept
        writer.splits, writer._created, writer._created_dirs = {}, [], []
        writer._finished, writer._staging, writer._staging_lock = False, None, None
        return writer

    # ---- context manager -------------------------------------------------------------------

    def __enter__(self) -> "StoreWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is not None:
            self._fail(exc_type)
        return False

    def abort(self) -> None:
        """Remove every file and directory this writer created (shards, tmp files, VDS, manifest)."""
        if self._staging is not None:
            self._remove_staging()
            return
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
        if issubclass(exc_type, Exception) or self._staging is not None:
            # an interrupted overwrite keeps nothing: the old store is still in place, untouched
            self.abort()
        else:  # KeyboardInterrupt/SystemExit: keep finished shards so resume=True can continue
            for path in self._created:
                if os.path.lexists(path + TMP_SUFFIX):
                    os.remove(path + TMP_SUFFIX)

    # ---- output directory ------------------------------------------------------------------

    def _prepare(self, overwrite: bool, resume: bool) -> None:
        d = self.store_dir
        recover_interrupted_overwrite(d)
        if os.path.islink(d) and not os.path.isdir(d):
            raise StoreError(f"{d}: is a symbolic link that does not lead to a directory")
        if not os.path.exists(d):
            os.makedirs(d)
            self._created_dirs.append(d)
            return
        if not os.path.isdir(d):
            raise StoreError(f"{d}: exists and is not a directory")
        if not os.listdir(d):
            return
        if resume:
            if os.path.isfile(os.path.join(d, MANIFEST_NAME)):
                raise StoreError(f"{d}: holds a complete store, so there is nothing to resume; "
                                 "pass --overwrite to replace it")
            self._check_resumable()
            self._remove_unfinished_files()
            return
        if overwrite:
            check_output_dir(d, overwrite=True)  # refuses a link, foreign files or links before anything is written
            self._staging = self._make_staging()
            self.write_dir = self._staging
            return
        raise StoreError(f"{d}: output directory is not empty; pass --overwrite to replace it, "
                         "or --resume to finish an interrupted export")

    def _make_staging(self) -> str:
        """A new, empty sibling directory `STORE.partial-XXXXXXXX` (same file system, so renames are atomic)."""
        parent, name = os.path.split(os.path.abspath(self.store_dir))
        for _ in range(100):
            path = os.path.join(parent, f"{name}.partial-{secrets.token_hex(4)}")
            try:
                os.mkdir(path)
                self._staging_lock = lock_directory(path)
                return path
            except FileExistsError:
                continue
            except OSError as exc:
                raise StoreError(f"{self.store_dir}: cannot create the new store beside it in {parent} "
                                 f"({exc.strerror or exc})") from None
        raise StoreError(f"{self.store_dir}: cannot find a free name for the new store in {parent}")

    def _release_staging_lock(self) -> None:
        lock, self._staging_lock = self._staging_lock, None
        if lock is not None:
            os.close(lock)  # closing the last descriptor releases the flock

    def _remove_staging(self) -> None:
        staging, self._staging = self._staging, None
        self.write_dir = self.store_dir
        self._created.clear()
        self._created_dirs.clear()
        if staging is not None and os.path.isdir(staging) and not os.path.islink(staging):
            shutil.rmtree(staging, ignore_errors=True)  # made by this writer: it holds nothing else
        self._release_staging_lock()

    def _swap_in(self) -> None:
        """Replace the old store by the complete one in the staging directory, then remove the old one."""
        d = os.path.abspath(self.store_dir)
        old = None
        for _ in range(100):
            candidate = f"{d}.replaced-{secrets.token_hex(4)}"
            if not os.path.lexists(candidate):
                old = candidate
                break
        if old is None:
            raise StoreError(f"{self.store_dir}: cannot find a free name to move the old store aside")
        try:
            os.rename(d, old)
        except OSError as exc:
            raise StoreError(f"{self.store_dir}: cannot move the old store aside ({exc.strerror or exc}); "
                             "it is unchanged") from None
        try:
            os.rename(self._staging, d)
        except OSError as exc:
            os.rename(old, d)
            raise StoreError(f"{self.store_dir}: cannot move the new store into place ({exc.strerror or exc}); "
                             "the old store is unchanged") from None
        self._staging, self.write_dir = None, self.store_dir
        self._created.clear()  # the new store is the store now: nothing of it is removed any more
        self._release_staging_lock()
        _remove_old_store(old)

    def _remove_unfinished_files(self) -> None:
        """Before a resume: remove the manifest (first, so no reader takes the directory for complete)
        and every tmp file; finished shards stay."""
        entries = store_entries(self.store_dir)
        manifest = os.path.join(self.store_dir, MANIFEST_NAME)
        if os.path.exists(manifest):
            os.remove(manifest)
        for path in entries:
            if os.path.isfile(path) and path.endswith(TMP_SUFFIX):
                os.remove(path)

    def _check_resumable(self) -> None:
        """resume=True continues only a store of the same tasks and image shape."""
        for path in store_entries(self.store_dir):
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

    def write_split(self, split: str, num_samples: int, shard_size: int, make_batches, progress: bool = True,
                    dist=None) -> dict:
        """Write positions 0..num_samples-1 of `split` in shards of `shard_size`; returns the split's record.

        `make_batches(start, stop)` yields Batches for positions [start, stop); it is called once per shard
        that is not already complete. With `dist` (a mtlue.distributed.DistContext of several processes)
        this process writes only the shards it owns (shard_id % world_size == rank), and the owners'
        shard records (each sha256 computed once, by its owner) are gathered on every process.
        """
        try:
            return self._write_split(split, int(num_samples), int(shard_size), make_batches, progress, dist)
        except BaseException as exc:
            self._fail(type(exc))
            raise

    def _write_split(self, split, num_samples, shard_size, make_batches, progress, dist=None) -> dict:
        if not SPLIT_NAME.match(split) or split in ("manifest",):
            raise StoreError(f"{self.store_dir}: bad split name {split!r}")
        if split in self.splits:
            raise StoreError(f"{self.store_dir}: split {split!r} was already written")
        if num_samples < 1:
            raise StoreError(f"{self.store_dir}: split {split!r} has no samples")
        if shard_size < 1:
            raise StoreError(f"{self.store_dir}: shard size must be at least 1, got {shard_size}")
        split_dir = os.path.join(self.write_dir, split)
        ranges = shard_ranges(num_samples, shard_size)
        parallel = dist is not None and dist.distributed
        main = not parallel or dist.is_main
        if main and not os.path.isdir(split_dir):
            os.makedirs(split_dir)
            self._created_dirs.append(split_dir)
        planned = {os.path.basename(shard_relpath(split, i, len(ranges))) for i in range(len(ranges))}
        for name in os.listdir(split_dir) if main else ():  # shards of an earlier export with another shard size
            if SHARD_ENTRY.match(name) and name.split(".h5")[0] + ".h5" not in planned:
                os.remove(os.path.join(split_dir, name))
        if parallel:
            dist.barrier()  # the split directory exists and holds no stale shard
        from tqdm.auto import tqdm

        records = {}  # shard_id -> record, of the shards this process owns
        with tqdm(total=num_samples, desc=f"export {split}", unit="img", disable=not progress, leave=False) as bar:
            for shard_id, (start, stop) in enumerate(ranges):
                relpath = shard_relpath(split, shard_id, len(ranges))
                path = os.path.join(self.write_dir, relpath)
                attrs = {"split": split, "shard_id": shard_id, "num_shards": len(ranges)}
                if parallel and not dist.owns(shard_id):
                    continue
                digest = self._complete_shard(path, attrs, stop - start) if self.resume else None
                if digest is None:
                    self._created += [path, path + CHECKSUM_SUFFIX]
                    write_shard(path, make_batches(start, stop), stop - start, start, self.tasks,
                                self.image_shape, attrs, on_rows=bar.update)
                    digest = sha256_file(path)
                    write_text_atomic(path + CHECKSUM_SUFFIX, f"{digest}  {os.path.basename(path)}\n")
                else:
                    bar.update(stop - start)
                records[shard_id] = self._shard_record(path, relpath, digest)
        if parallel:  # a gather is a barrier too: every rank has written its shards
            records = {k: v for part in dist.all_gather_objects(records) for k, v in part.items()}
        self.splits[split] = {"count": num_samples, "shard_size": shard_size, "vds": vds_name(split),
                              "shards": [records[shard_id] for shard_id in range(len(ranges))]}
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
            self._created.append(os.path.join(self.write_dir, record["vds"]))
            write_split_vds(self.write_dir, split, record["shards"], self.tasks_json)
        manifest = {
            "schema": STORE_SCHEMA,
            "tasks": [t.to_json() for t in self.tasks],
            "image_shape": list(self.image_shape),
            "splits": self.splits,
            "protection": without_local_paths(protection),
            "settings": {"compression": COMPRESSION, "compression_level": COMPRESSION_LEVEL, "shuffle": True,
                         "fletcher32": True, "shard_schema": SHARD_SCHEMA},
            "software": software_versions(),
        }
        for key, value in without_local_paths(extra or {}).items():
            if key == "settings":
                manifest["settings"].update(value)
            elif key in manifest:
                raise StoreError(f"{self.store_dir}: extra manifest key {key!r} would replace a store field")
            else:
                manifest[key] = value
        self._created.append(os.path.join(self.write_dir, MANIFEST_NAME))
        write_manifest(self.write_dir, manifest)
        if self._staging is not None:
            self._swap_in()
        self._finished = True
        return manifest


def _remove_old_store(path: str) -> None:
    """Remove the replaced store (checked at the start to hold only store files and no links).

    shutil.rmtree removes links inside a real directory without following them."""
    try:
        if os.path.islink(path):
            os.unlink(path)
        else:
            shutil.rmtree(path)
    except OSError as exc:
        raise StoreError(f"{path}: the new store is in place, but the old one moved here could not be "
                         f"removed ({exc.strerror or exc}); delete it by hand") from None
