"""ReleaseSource: a published release read as a Source; the format modules read its metadata and images."""

from __future__ import annotations

import hashlib
import os
from collections import OrderedDict
from typing import Iterator

import numpy as np

from mtlue.data.base import Batch, Sample, Source, TaskSpec
from mtlue.data.release import imagefolder, parquet, webdataset
from mtlue.data.release.layout import (IMAGE_MODES, RELEASE_NAME, SCALAR_KINDS, SUMS_NAME, read_checksums,
                                       read_release, split_checksums)
from mtlue.data.release.table import SplitTable, decode_image
from mtlue.errors import IntegrityError, StoreError

FORMAT_MODULES = {"imagefolder": imagefolder, "webdataset": webdataset, "parquet": parquet}


class ReleaseSource(Source):
    """A Source over the splits of a published release; samples come back as the files hold them."""

    name = "release"
    spec_help = "RELEASE (a directory holding release.json, written by mtlue release)"
    summary = "a published mtlue release (image folder, WebDataset or Parquet of PNGs); its splits as released"

    def __init__(self, release_dir: str):
        self.release_dir = os.fspath(release_dir)
        self.release = read_release(self.release_dir)
        self.format = self.release["format"]
        self.name = f"release:{os.path.basename(os.path.normpath(self.release_dir))}"
        where = os.path.join(self.release_dir, RELEASE_NAME)
        self.tasks = tuple(TaskSpec.from_json(t) for t in self.release["tasks"])
        for task in self.tasks:
            if task.kind not in SCALAR_KINDS:
                raise StoreError(f"{where}: task {task.name!r} is {task.kind}; a release holds scalar labels only")
        self.image_shape = tuple(int(v) for v in self.release["image_shape"])
        if len(self.image_shape) != 3 or self.image_shape[2] not in IMAGE_MODES:
            raise StoreError(f"{where}: image_shape {list(self.image_shape)} is not [H, W, 1|3|4]")
        sums = read_checksums(self.release_dir)  # IntegrityError when absent: a release always has one
        with open(os.path.join(self.release_dir, SUMS_NAME), "rb") as fh:
            self._digest = hashlib.sha256(fh.read()).hexdigest()
        self._counts = {split: int(record["count"]) for split, record in self.release["splits"].items()}
        self.manifest = {  # the parts of a store manifest that verify and fingerprints read
            "tasks": self.release["tasks"], "image_shape": list(self.image_shape),
            "protection": self.release.get("protection"), "source": self.release.get("source"),
            "verification": self.release.get("verification"),
            "splits": {split: {"count": count, "shards": split_checksums(sums, split)}
                       for split, count in self._counts.items()},
        }
        self._tables = {}  # split -> SplitTable, read on first use (small: it pickles into workers)
        self._handles, self._parts, self._pid = {}, OrderedDict(), None  # per process: see _reset_after_fork

    @classmethod
    def from_spec(cls, arg: str | None, seed: int | None = None) -> "ReleaseSource":
        if not arg:
            raise StoreError("a release spec needs the release directory")
        return cls(arg)

    @property
    def protection(self) -> dict | None:
        return self.release.get("protection")

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_handles"], state["_parts"], state["_pid"] = {}, OrderedDict(), None
        return state

    def close(self) -> None:
        if self._pid == os.getpid():
            for fh in self._handles.values():
                fh.close()
        self._handles, self._parts, self._pid = {}, OrderedDict(), None

    # ---- Source interface ------------------------------------------------------------------

    def splits(self) -> tuple:
        return tuple(self._counts)

    def size(self, split: str) -> int:
        self.check_split(split)
        return self._counts[split]

    def get(self, split: str, position: int) -> Sample:
        table = self.table(split)
        if not 0 <= position < len(table.index):
            raise StoreError(f"{self.release_dir}: position {position} outside split {split!r} "
                             f"of {len(table.index)} samples")
        labels = {t.name: table.labels[t.name][position].item() for t in self.tasks}
        masks = {t.name: bool(table.masks[t.name][position]) for t in self.tasks}
        return Sample(int(table.index[position]), self._image(split, position), labels, masks)

    def batches(self, split: str, batch_size: int = 256, start: int = 0, stop: int | None = None) -> Iterator[Batch]:
        table = self.table(split)
        stop = len(table.index) if stop is None else min(stop, len(table.index))
        for lo in range(start, stop, batch_size):
            hi = min(lo + batch_size, stop)
            images = np.stack([self._image(split, p) for p in range(lo, hi)])
            yield Batch(table.index[lo:hi].copy(), images, {t: v[lo:hi].copy() for t, v in table.labels.items()},
                        {t: m[lo:hi].copy() for t, m in table.masks.items()})

    def label_array(self, split: str, task: str) -> tuple[np.ndarray, np.ndarray]:
        self.task(task)
        table = self.table(split)
        return table.labels[task].copy(), table.masks[task].copy()

    def index_array(self, split: str) -> np.ndarray:
        return self.table(split).index.copy()

    def content_digest(self) -> str:
        """The release's identity: sha256 of SHA256SUMS, which covers every file (no image is read)."""
        return self._digest

    def recorded_origin(self) -> dict:
        return self.release.get("source") or {}

    # ---- metadata --------------------------------------------------------------------------

    def table(self, split: str) -> SplitTable:
        """The split's metadata, read once (and checked against release.json's count)."""
        self.check_split(split)
        table = self._tables.get(split)
        if table is None:
            table = FORMAT_MODULES[self.format].read_table(self.release_dir, self.release, split, self.tasks)
            if len(table.index) != self._counts[split]:
                raise IntegrityError(f"{self.release_dir}: split {split!r} holds {len(table.index)} samples, "
                                     f"{RELEASE_NAME} records {self._counts[split]}")
            self._tables[split] = table
        return table

    # ---- images ----------------------------------------------------------------------------

    def _reset_after_fork(self) -> None:
        if self._pid != os.getpid():  # a DataLoader worker: the parent's handles are not ours
            self._handles, self._parts, self._pid = {}, OrderedDict(), os.getpid()

    def _image(self, split: str, position: int) -> np.ndarray:
        table = self.table(split)
        path = table.files[table.file_of[position]]
        self._reset_after_fork()
        try:
            if self.format == "imagefolder":
                data = imagefolder.read_image(path)
                where = path
            elif self.format == "webdataset":
                data = webdataset.read_image(self._handles, path, int(table.offset[position]),
                                             int(table.size[position]))
                where = f"{path}: sample index {int(table.index[position])}"
            else:
                data = parquet.part_images(self._parts, path, self.release_dir)[int(table.offset[position])]
                where = f"{path}: row {int(table.offset[position])}"
        except OSError as exc:
            raise StoreError(f"{path}: cannot read ({exc})") from None
        return decode_image(data, self.image_shape, where)
