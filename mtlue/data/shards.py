"""ShardSource: read an mtlue HDF5 shard store (the directory holding manifest.json) as a Source.

HDF5 handles are opened lazily per process (DataLoader workers each open their own) and are never
pickled (pytorch/pytorch#11929: h5py handles shared across fork break reads).
"""

from __future__ import annotations

import os
from typing import Iterator

import numpy as np

from mtlue.data.base import Batch, Sample, Source, TaskSpec
from mtlue.errors import StoreError

IMAGE_CACHE_BYTES = 256 * 2**20  # per process, whole shards decoded in memory (small stores only)
READ_CACHE_BYTES = 4 * 1024 * 1024


class ShardSource(Source):
    """A Source over the splits an mtlue store holds; samples come back exactly as stored."""

    name = "store"
    spec_help = "STORE (a directory holding manifest.json)"
    summary = "an mtlue HDF5 shard store written by `mtlue export` or `mtlue protect`; its splits as stored"

    def __init__(self, store_dir: str):
        from mtlue.store.manifest import read_manifest, store_file

        self.store_dir = os.fspath(store_dir)
        self.manifest = read_manifest(self.store_dir)
        self.name = f"store:{os.path.basename(os.path.normpath(self.store_dir))}"
        self.tasks = tuple(TaskSpec.from_json(t) for t in self.manifest["tasks"])
        self.image_shape = tuple(self.manifest["image_shape"])
        self._shards = {}  # split -> [(path, count)]
        self._offsets = {}  # split -> cumulative start positions, len = shards + 1
        for split, record in self.manifest["splits"].items():
            paths = [store_file(self.store_dir, s["file"], f"split {split!r} shard {number}")
                     for number, s in enumerate(record["shards"])]
            for path in paths:
                if not os.path.isfile(path):
                    raise StoreError(f"{path}: shard listed in the manifest is missing")
            counts = [int(s["count"]) for s in record["shards"]]
            self._shards[split] = paths
            self._offsets[split] = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self._handles, self._meta, self._pid = {}, {}, None  # per process: see _file

    @classmethod
    def from_spec(cls, arg: str | None, seed: int | None = None) -> "ShardSource":
        if not arg:
            raise StoreError("a store spec needs the store directory")
        return cls(arg)

    @property
    def protection(self) -> dict | None:
        return self.manifest.get("protection")

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_handles"], state["_meta"], state["_pid"] = {}, {}, None
        return state

    def close(self) -> None:
        if self._pid == os.getpid():
            for f in self._handles.values():
                f.close()
        self._handles, self._meta, self._pid = {}, {}, None

    # ---- Source interface ------------------------------------------------------------------

    def splits(self) -> tuple:
        return tuple(self._shards)

    def size(self, split: str) -> int:
        self.check_split(split)
        return int(self._offsets[split][-1])

    def get(self, split: str, position: int) -> Sample:
        shard, local = self._locate(split, position)
        f = self._file(split, shard)
        meta = self._metadata(split, shard)
        images = meta["images"]
        image = images[local] if images is not None else self._read(split, shard, lambda: f["images"][local])
        labels = {}
        for t in self.tasks:
            values = meta["labels"].get(t.name)
            labels[t.name] = values[local] if values is not None else self._read(
                split, shard, lambda: f["labels"][t.name][local])
        return Sample(index=int(meta["index"][local]), image=image, labels=labels,
                      mask={t.name: bool(meta["masks"][t.name][local]) for t in self.tasks})

    def batches(self, split: str, batch_size: int = 256, start: int = 0, stop: int | None = None) -> Iterator[Batch]:
        """Consecutive samples as Batches, read as contiguous slices of each shard."""
        stop = self.size(split) if stop is None else min(stop, self.size(split))
        offsets = self._offsets[split]
        for lo in range(start, stop, batch_size):
            hi = min(lo + batch_size, stop)
            pieces = []
            shard = int(np.searchsorted(offsets, lo, side="right") - 1)
            while lo < hi:
                shard_stop = min(hi, int(offsets[shard + 1]))
                f = self._file(split, shard)
                a, b = lo - int(offsets[shard]), shard_stop - int(offsets[shard])
                pieces.append(self._read(split, shard, lambda: self._rows(f, a, b)))
                lo, shard = shard_stop, shard + 1
            yield pieces[0] if len(pieces) == 1 else _concat(pieces)

    def index_array(self, split: str) -> np.ndarray:
        self.check_split(split)
        parts = [self._read(split, shard, lambda: self._file(split, shard)["index"][:])
                 for shard in range(len(self._shards[split]))]
        return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)

    def content_digest(self) -> str:
        """The store's identity: its tasks and every shard's recorded sha256 (no pixel is read)."""
        import hashlib

        digest = hashlib.sha256(repr([t.to_json() for t in self.tasks]).encode())
        for split, record in self.manifest["splits"].items():
            digest.update(f"|{split}|".encode())
            digest.update(" ".join(str(s.get("sha256")) for s in record["shards"]).encode())
        return digest.hexdigest()

    def recorded_origin(self) -> dict:
        return self.manifest.get("source") or {}

    def label_array(self, split: str, task: str) -> tuple[np.ndarray, np.ndarray]:
        self.check_split(split)
        self.task(task)
        labels, masks = [], []
        for shard in range(len(self._shards[split])):
            f = self._file(split, shard)
            labels.append(self._read(split, shard, lambda: f["labels"][task][:]))
            masks.append(self._read(split, shard, lambda: f["masks"][task][:]))
        return np.concatenate(labels), np.concatenate(masks)

    # ---- shard access ----------------------------------------------------------------------

    def _locate(self, split: str, position: int) -> tuple[int, int]:
        size = self.size(split)
        if not 0 <= position < size:
            raise StoreError(f"{self.store_dir}: position {position} outside split {split!r} of {size} samples")
        shard = int(np.searchsorted(self._offsets[split], position, side="right") - 1)
        return shard, position - int(self._offsets[split][shard])

    def _file(self, split: str, shard: int):
        """This process's open handle of a shard (reopened after a fork: handles are per process)."""
        import h5py

        from mtlue.store.layout import SHARD_SCHEMA

        if self._pid != os.getpid():
            self._handles, self._meta, self._pid = {}, {}, os.getpid()
        path = self._shards[split][shard]
        handle = self._handles.get(path)
        if handle is None:
            try:
                handle = h5py.File(path, "r", rdcc_nbytes=READ_CACHE_BYTES)
            except OSError as exc:
                raise StoreError(f"{path}: cannot open shard ({exc})") from None
            if handle.attrs.get("schema") != SHARD_SCHEMA:
                handle.close()
                raise StoreError(f"{path}: not an mtlue shard (schema {handle.attrs.get('schema')!r})")
            self._handles[path] = handle
        return handle

    def _metadata(self, split: str, shard: int) -> dict:
        """Index, per-sample labels and masks of a shard, read once per process (a few bytes per sample).

        Per-item reads then touch only the image: one h5py call instead of 2 per task (CelebA has 40).
        Dense labels (N, H, W) stay on disk and are read per item. While the shards decoded so far
        hold at most IMAGE_CACHE_BYTES, the whole image array is decoded here too (`images`, else
        None): on a small store one h5py call per sample costs more than a small model's step.
        """
        f = self._file(split, shard)  # first: resets the caches after a fork
        path = self._shards[split][shard]
        meta = self._meta.get(path)
        if meta is None:

            def read_all():
                labels = {t.name: f["labels"][t.name][:] for t in self.tasks if f["labels"][t.name].ndim == 1}
                images = f["images"]
                decoded = sum(m["images"].nbytes for m in self._meta.values() if m["images"] is not None)
                fits = decoded + images.size * images.dtype.itemsize <= IMAGE_CACHE_BYTES
                return {"index": f["index"][:], "labels": labels, "images": images[:] if fits else None,
                        "masks": {t.name: f["masks"][t.name][:] for t in self.tasks}}

            meta = self._meta[path] = self._read(split, shard, read_all)
        return meta

    def _rows(self, f, a: int, b: int) -> Batch:
        names = [t.name for t in self.tasks]
        return Batch(index=f["index"][a:b], images=f["images"][a:b],
                     labels={t: f["labels"][t][a:b] for t in names}, masks={t: f["masks"][t][a:b] for t in names})

    def _read(self, split: str, shard: int, read):
        try:
            return read()
        except OSError as exc:  # fletcher32 or gzip failure: the shard's bytes are damaged
            raise StoreError(f"{self._shards[split][shard]}: cannot read ({exc}); "
                             f"run `mtlue inspect {self.store_dir} --verify`") from None


def _concat(pieces: list) -> Batch:
    tasks = pieces[0].labels.keys()
    return Batch(index=np.concatenate([p.index for p in pieces]), images=np.concatenate([p.images for p in pieces]),
                 labels={t: np.concatenate([p.labels[t] for p in pieces]) for t in tasks},
                 masks={t: np.concatenate([p.masks[t] for p in pieces]) for t in tasks})
