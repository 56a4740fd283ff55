"""ReleaseSource: read a published mtlue release (the directory holding release.json) as a Source.

A release is what `mtlue release STORE OUT` writes for a dataset hub: an image folder
(`<split>/metadata.csv` + one PNG per sample), WebDataset tar shards (`<split>/shard-K.tar`, members
`<key>.png` and `<key>.json`) or Parquet parts (a Hugging Face Image column), plus release.json and
SHA256SUMS. Indices, labels and masks come from the metadata without decoding an image; images are
decoded per sample from their file, tar member or Parquet cell. Only PIL, numpy and the standard
library are needed, except for Parquet (pyarrow).

`verify_release` re-checks SHA256SUMS; `fidelity_warnings` says what a re-encoding or resize did to a
release, a plain image folder or a store (JPEG removes the protection).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import tarfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Iterator

import numpy as np

from mtlue.data.base import Batch, Sample, Source, TaskSpec, label_dtype
from mtlue.errors import IntegrityError, StoreError

RELEASE_NAME = "release.json"
RELEASE_SCHEMA = "mtlue-release/1"
SUMS_NAME = "SHA256SUMS"
FORMATS = ("imagefolder", "webdataset", "parquet")
SCALAR_KINDS = ("binary", "multiclass", "regression")
IMAGE_MODES = {1: "L", 3: "RGB", 4: "RGBA"}  # channels -> the PIL mode a PNG of them decodes to
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".ppm", ".pgm")
LOSSY_FORMATS = ("JPEG", "WEBP", "MPO")
PART_CACHE_BYTES = 256 * 2**20  # per process: PNG bytes of the Parquet parts read so far
INSTALL_HINT = "pip install 'mtlue[release]'"


# ---- release.json and SHA256SUMS ------------------------------------------------------------

def read_release(release_dir: str) -> dict:
    """The parsed release.json of a release; StoreError names the file when it is absent or malformed."""
    path = os.path.join(release_dir, RELEASE_NAME)
    if not os.path.isfile(path):
        raise StoreError(f"{release_dir}: no {RELEASE_NAME}, so this is not an mtlue release")
    try:
        with open(path, encoding="utf-8") as fh:
            release = json.load(fh)
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise StoreError(f"{path}: unreadable release record ({exc})") from None
    if not isinstance(release, dict) or release.get("schema") != RELEASE_SCHEMA:
        found = release.get("schema") if isinstance(release, dict) else type(release).__name__
        raise StoreError(f"{path}: schema {found!r}, expected {RELEASE_SCHEMA!r}")
    for key in ("format", "tasks", "image_shape", "splits"):
        if key not in release:
            raise StoreError(f"{path}: missing key {key!r}")
    if release["format"] not in FORMATS:
        raise StoreError(f"{path}: format {release['format']!r}, expected one of {', '.join(FORMATS)}")
    return release


def read_checksums(release_dir: str) -> dict:
    """SHA256SUMS as {relative path: sha256}, in file order (sha256sum's `<hex>  <path>` lines)."""
    path = os.path.join(release_dir, SUMS_NAME)
    try:
        with open(path, encoding="utf-8") as fh:
            lines = fh.read().splitlines()
    except FileNotFoundError:
        raise IntegrityError(f"{release_dir}: no {SUMS_NAME}, so its files cannot be checked") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise IntegrityError(f"{path}: unreadable ({exc})") from None
    sums = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        digest, name = line[:64], line[66:] if line[64:66] in ("  ", " *") else None
        if name is None or len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest.lower()):
            raise IntegrityError(f"{path}: line {number} is not '<sha256>  <path>': {line[:80]!r}")
        relative_path(release_dir, name, f"{path}: line {number}")  # verify_release refuses links
        sums[name] = digest.lower()
    return sums


def relative_path(folder: str, name, where: str) -> str:
    """`name` (a relative POSIX path with no `..`) joined to `folder`; StoreError for anything else."""
    parts = name.split("/") if isinstance(name, str) and name else [""]
    if PurePosixPath(name or "/").is_absolute() or any(p in ("", ".", "..") or "\\" in p or "\0" in p for p in parts):
        raise StoreError(f"{where}: {name!r} is not a relative path inside the release; refusing it")
    return os.path.join(folder, *parts)


def release_path(release_dir: str, name, where: str) -> str:
    """The path of `name` inside the release, also refused when a symbolic link leads it outside."""
    path = relative_path(release_dir, name, where)
    root = os.path.realpath(release_dir)
    if os.path.commonpath([root, os.path.realpath(path)]) != root:
        raise StoreError(f"{where}: {name!r} leads outside the release through a symbolic link; refusing it")
    return path


def _files_on_disk(release_dir: str) -> list:
    """Relative POSIX paths of every file under the release except SHA256SUMS; a link is refused."""
    found = []
    for root, dirs, files in os.walk(release_dir):
        for name in sorted(dirs + files):
            path = os.path.join(root, name)
            if os.path.islink(path):
                raise IntegrityError(f"{path}: a symbolic link inside the release; a release holds plain files")
        for name in files:
            relative = os.path.relpath(os.path.join(root, name), release_dir).replace(os.sep, "/")
            if relative != SUMS_NAME:
                found.append(relative)
    return sorted(found)


def verify_release(release_dir: str) -> dict:
    """Re-check a release against SHA256SUMS: no listed file missing, none unlisted, every sha256 equal.

    IntegrityError names the first file at fault. Returns {"files", "bytes", "format"}.
    """
    from mtlue.store.layout import sha256_file

    release_dir = os.fspath(release_dir)
    if not os.path.isdir(release_dir):
        raise StoreError(f"{release_dir}: no such release directory")
    listed = read_checksums(release_dir)
    present = _files_on_disk(release_dir)
    for name in listed:
        if not os.path.isfile(os.path.join(release_dir, *name.split("/"))):
            raise IntegrityError(f"{os.path.join(release_dir, name)}: listed in {SUMS_NAME} but missing")
    for name in present:
        if name not in listed:
            raise IntegrityError(f"{os.path.join(release_dir, name)}: not listed in {SUMS_NAME} "
                                 "(added after the release was written)")
    total = 0
    for name, expected in listed.items():
        path = os.path.join(release_dir, *name.split("/"))
        actual = sha256_file(path)
        if actual != expected:
            raise IntegrityError(f"{path}: sha256 {actual[:16]}… but {SUMS_NAME} records {expected[:16]}… "
                                 "(the file changed after the release was written)")
        total += os.path.getsize(path)
    release = read_release(release_dir)
    return {"files": len(listed), "bytes": total, "format": release["format"]}


# ---- the Source ------------------------------------------------------------------------------

@dataclass
class SplitTable:
    """What the metadata says about a split: per sample its index, labels, masks and where its image is.

    The image of position p is `files[file_of[p]]`, whole (imagefolder), the member bytes at
    `offset[p]`, `size[p]` (webdataset), or row `offset[p]` of the part (parquet).
    """

    index: np.ndarray
    labels: dict
    masks: dict
    files: list
    file_of: np.ndarray
    offset: np.ndarray
    size: np.ndarray


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
            read = {"imagefolder": self._imagefolder_table, "webdataset": self._webdataset_table,
                    "parquet": self._parquet_table}[self.format]
            table = read(split)
            if len(table.index) != self._counts[split]:
                raise IntegrityError(f"{self.release_dir}: split {split!r} holds {len(table.index)} samples, "
                                     f"{RELEASE_NAME} records {self._counts[split]}")
            self._tables[split] = table
        return table

    def _split_files(self, split: str, suffix: str) -> list:
        """The split's data files: those release.json lists with `suffix`, else the folder's, sorted."""
        where = f"{os.path.join(self.release_dir, RELEASE_NAME)}: split {split!r}"
        names = [n for n in self.release["splits"][split].get("files") or [] if n.endswith(suffix)]
        if not names:
            folder = os.path.join(self.release_dir, split)
            names = sorted(f"{split}/{n}" for n in (os.listdir(folder) if os.path.isdir(folder) else [])
                           if n.endswith(suffix))
        paths = [release_path(self.release_dir, n, where) for n in names]
        for path in paths:
            if not os.path.isfile(path):
                raise StoreError(f"{path}: listed for split {split!r} but missing")
        if not paths and self._counts[split]:
            raise StoreError(f"{self.release_dir}: split {split!r} has no {suffix} file")
        return paths

    def _imagefolder_table(self, split: str) -> SplitTable:
        path = release_path(self.release_dir, f"{split}/metadata.csv", f"split {split!r}")
        folder = os.path.dirname(path)
        rows = []
        try:
            with open(path, newline="", encoding="utf-8") as fh:
                reader = csv.DictReader(fh)
                missing = [c for c in ("file_name", "index", *(t.name for t in self.tasks))
                           if c not in (reader.fieldnames or [])]
                if missing:
                    raise StoreError(f"{path}: no column {', '.join(map(repr, missing))}")
                rows = list(reader)
        except FileNotFoundError:
            raise StoreError(f"{path}: missing (an image folder release has one metadata.csv per split)") from None
        builder = _TableBuilder(self.tasks)
        files = []
        for row_number, row in enumerate(rows, start=2):
            where = f"{path}: row {row_number}"
            files.append(relative_path(folder, row["file_name"], where))  # verify_release refuses links
            builder.add(row["index"], {t.name: row[t.name] for t in self.tasks}, where)
        positions = np.arange(len(files), dtype=np.int64)
        return builder.table(files, positions, np.zeros_like(positions), np.full_like(positions, -1))

    def _webdataset_table(self, split: str) -> SplitTable:
        builder = _TableBuilder(self.tasks)
        paths = self._split_files(split, ".tar")
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
                        record = _json_record(tar.extractfile(members["json"]).read(), where)
                        builder.add(record.get("index"), record.get("labels") or {}, where)
                        file_of.append(number)
                        offsets.append(image.offset_data)
                        sizes.append(image.size)
            except (tarfile.TarError, OSError) as exc:
                raise StoreError(f"{path}: unreadable tar shard ({exc})") from None
        return builder.table(paths, np.asarray(file_of, np.int64), np.asarray(offsets, np.int64),
                             np.asarray(sizes, np.int64))

    def _parquet_table(self, split: str) -> SplitTable:
        pq = _parquet_module(self.release_dir)
        builder = _TableBuilder(self.tasks)
        paths = self._split_files(split, ".parquet")
        file_of, rows = [], []
        for number, path in enumerate(paths):
            columns = ["index", *(t.name for t in self.tasks)]
            try:
                table = pq.read_table(path, columns=columns)
            except Exception as exc:  # pyarrow raises ArrowInvalid, KeyError, OSError for bad parts
                raise StoreError(f"{path}: unreadable Parquet part ({exc})") from None
            values = {c: table.column(c).to_pylist() for c in columns}
            for row in range(table.num_rows):
                builder.add(values["index"][row], {t.name: values[t.name][row] for t in self.tasks},
                            f"{path}: row {row}")
            file_of += [number] * table.num_rows
            rows += range(table.num_rows)
        file_of = np.asarray(file_of, np.int64)
        return builder.table(paths, file_of, np.asarray(rows, np.int64), np.full_like(file_of, -1))

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
                with open(path, "rb") as fh:
                    data = fh.read()
                where = path
            elif self.format == "webdataset":
                handle = self._handles.get(path)
                if handle is None:
                    handle = self._handles[path] = open(path, "rb")
                handle.seek(int(table.offset[position]))
                data = handle.read(int(table.size[position]))
                where = f"{path}: sample index {int(table.index[position])}"
            else:
                data = self._part_images(path)[int(table.offset[position])]
                where = f"{path}: row {int(table.offset[position])}"
        except OSError as exc:
            raise StoreError(f"{path}: cannot read ({exc})") from None
        return decode_image(data, self.image_shape, where)

    def _part_images(self, path: str) -> list:
        """The PNG bytes of every row of a Parquet part, kept while the parts read hold PART_CACHE_BYTES."""
        images = self._parts.get(path)
        if images is None:
            pq = _parquet_module(self.release_dir)
            try:
                column = pq.read_table(path, columns=["image"]).column("image").combine_chunks()
                images = column.field("bytes").to_pylist()
            except Exception as exc:
                raise StoreError(f"{path}: cannot read the image column ({exc})") from None
            self._parts[path] = images
            while len(self._parts) > 1 and sum(sum(map(len, p)) for p in self._parts.values()) > PART_CACHE_BYTES:
                self._parts.popitem(last=False)
        return images


def split_checksums(sums: dict, split: str) -> list:
    """A split's files as [{"file", "sha256"}] from SHA256SUMS, for fingerprints (verify.data_identity).

    Tars, Parquet parts and metadata.csv one by one; per-sample image files as one entry whose sha256
    covers their SHA256SUMS lines, so a victim's fingerprint stays small for a large image folder.
    """
    mine = {n: sha for n, sha in sums.items() if n.startswith(split + "/")}
    files = [{"file": n, "sha256": sha} for n, sha in mine.items() if not n.lower().endswith(IMAGE_EXTENSIONS)]
    images = [f"{sha}  {n}\n" for n, sha in mine.items() if n.lower().endswith(IMAGE_EXTENSIONS)]
    if images:
        files.append({"file": f"{split}/ ({len(images)} image files)",
                      "sha256": hashlib.sha256("".join(images).encode()).hexdigest()})
    return files


class _TableBuilder:
    """Collects index, labels and masks of a split sample by sample, as mtlue's dtypes."""

    def __init__(self, tasks):
        self.tasks = tasks
        self.index, self.labels, self.masks = [], {t.name: [] for t in tasks}, {t.name: [] for t in tasks}

    def add(self, index, labels: dict, where: str) -> None:
        try:
            self.index.append(int(index))
        except (TypeError, ValueError):
            raise StoreError(f"{where}: index {index!r} is not an integer") from None
        for task in self.tasks:
            value, known = label_value(task, labels.get(task.name), where)
            self.labels[task.name].append(value)
            self.masks[task.name].append(known)

    def table(self, files, file_of, offset, size) -> SplitTable:
        return SplitTable(np.asarray(self.index, np.int64),
                          {t.name: np.asarray(self.labels[t.name], label_dtype(t)) for t in self.tasks},
                          {t.name: np.asarray(self.masks[t.name], bool) for t in self.tasks},
                          files, file_of, offset, size)


def label_value(task: TaskSpec, value, where: str) -> tuple:
    """(label, known) from a CSV cell, JSON value or Parquet cell: empty or null is missing (0, False)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return 0, False
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise StoreError(f"{where}: task {task.name!r}: label {value!r} is not a number") from None
    if not task.is_classification:
        return np.float32(number), True
    if not math.isfinite(number) or number != round(number) or not 0 <= number < task.num_classes:
        raise StoreError(f"{where}: task {task.name!r}: label {value!r} is not a class 0..{task.num_classes - 1}")
    return int(number), True


def decode_image(data: bytes, image_shape: tuple, where: str) -> np.ndarray:
    """Decode image bytes as uint8 H×W×C in the release's mode; StoreError when the size differs."""
    from PIL import Image

    height, width, channels = image_shape
    try:
        with Image.open(io.BytesIO(data)) as opened:
            image = opened if opened.mode == IMAGE_MODES[channels] else opened.convert(IMAGE_MODES[channels])
            array = np.array(image, dtype=np.uint8)
    except (OSError, ValueError, SyntaxError) as exc:
        raise StoreError(f"{where}: unreadable image ({' '.join(str(exc).split())})") from None
    array = array[..., None] if array.ndim == 2 else array
    if array.shape != (height, width, channels):
        raise StoreError(f"{where}: image is {array.shape[1]}x{array.shape[0]}, the release's image_shape is "
                         f"{width}x{height} (resized after release? see `mtlue inspect`)")
    return array


def _json_record(data: bytes, where: str) -> dict:
    try:
        record = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise StoreError(f"{where}: unreadable .json member ({exc})") from None
    if not isinstance(record, dict):
        raise StoreError(f"{where}: the .json member is not an object")
    return record


def _parquet_module(release_dir: str):
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise StoreError(f"{release_dir}: reading a Parquet release needs pyarrow ({INSTALL_HINT})") from None
    return pq


# ---- fidelity ------------------------------------------------------------------------------

class _ImageTally:
    """Counts the images that differ from what a lossless release holds, with one example of each."""

    def __init__(self, expected: tuple | None):
        self.expected = expected  # (width, height, mode), or None: the folder's most common one
        self.total, self.formats, self.shapes = 0, {}, {}

    def add(self, data_or_path, name: str) -> None:
        from PIL import Image

        self.total += 1
        try:
            with Image.open(data_or_path if isinstance(data_or_path, str) else io.BytesIO(data_or_path)) as image:
                found, shape = image.format or "unknown", (*image.size, image.mode)
        except (OSError, ValueError, SyntaxError):
            found, shape = "unreadable", None
        self.formats.setdefault(found, [0, name])[0] += 1
        if shape is not None:
            self.shapes.setdefault(shape, [0, name])[0] += 1

    def warnings(self, where: str) -> list:
        out = []
        for found, (count, example) in sorted(self.formats.items()):
            if found in LOSSY_FORMATS:
                out.append(f"{where}: {count} of {self.total} images are {found} (e.g. {example}): lossy "
                           "re-encoding changes the pixels and likely removes the protection; publish the PNGs")
            elif found == "unreadable":
                out.append(f"{where}: {count} of {self.total} images cannot be read (e.g. {example})")
            elif found != "PNG":
                out.append(f"{where}: {count} of {self.total} images are {found}, not PNG (e.g. {example}): "
                           "check that the conversion kept every pixel")
        expected = self.expected or (max(self.shapes, key=lambda k: self.shapes[k][0]) if self.shapes else None)
        said = "the release's image_shape is" if self.expected else "most are"
        for shape, (count, example) in sorted(self.shapes.items()):
            if shape != expected:
                out.append(f"{where}: {count} of {self.total} images are {shape[0]}x{shape[1]} {shape[2]} "
                           f"(e.g. {example}), {said} {expected[0]}x{expected[1]} {expected[2]}: resized or "
                           "converted images no longer carry the perturbation as it was made")
        return out


def fidelity_warnings(path: str) -> list:
    """What in a release, a plain image folder or a store has lost protection-relevant fidelity.

    Lossy image files (JPEG), files that are not PNG, and image sizes or modes that differ from
    release.json's image_shape (a plain folder: from its most common size) or, for a store, shards
    whose images differ from the manifest's image_shape. Reads image headers only.
    """
    path = os.fspath(path)
    if not os.path.isdir(path):
        raise StoreError(f"{path}: not a directory (a store, a release or an image folder)")
    if os.path.isfile(os.path.join(path, "manifest.json")):
        return _store_warnings(path)
    if not os.path.isfile(os.path.join(path, RELEASE_NAME)):
        tally = _ImageTally(None)
        for name in _image_files(path):
            tally.add(os.path.join(path, name), name)
        return tally.warnings(path)
    release = read_release(path)
    height, width, channels = (int(v) for v in release["image_shape"])
    out = [] if release.get("image_encoding", "png") == "png" else [
        f"{path}: {RELEASE_NAME} records image_encoding {release.get('image_encoding')!r}, not png"]
    for split in release["splits"]:
        tally = _ImageTally((width, height, IMAGE_MODES.get(channels, "?")))
        folder = os.path.join(path, split)
        listed = sorted(os.listdir(folder)) if os.path.isdir(folder) else []
        if release["format"] == "imagefolder":
            for name in _image_files(folder):
                tally.add(os.path.join(folder, name), f"{split}/{name}")
        elif release["format"] == "webdataset":
            for name in (n for n in listed if n.endswith(".tar")):
                with tarfile.open(os.path.join(folder, name), "r:") as tar:
                    for member in tar:
                        if member.isfile() and member.name.lower().endswith(IMAGE_EXTENSIONS):
                            tally.add(tar.extractfile(member).read(), f"{split}/{name}:{member.name}")
        else:
            pq = _parquet_module(path)
            for name in (n for n in listed if n.endswith(".parquet")):
                column = pq.read_table(os.path.join(folder, name), columns=["image"]).column("image").combine_chunks()
                for row, data in enumerate(column.field("bytes").to_pylist()):
                    tally.add(data or b"", f"{split}/{name}: row {row}")
        out += tally.warnings(f"{path} {split}")
    return out


def _image_files(folder: str) -> list:
    """Relative paths of the image files under `folder` (by extension), sorted."""
    found = []
    for root, _, files in os.walk(folder):
        found += [os.path.relpath(os.path.join(root, n), folder) for n in files if n.lower().endswith(IMAGE_EXTENSIONS)]
    return sorted(found)


def _store_warnings(store_dir: str) -> list:
    import h5py

    from mtlue.store.manifest import read_manifest, store_file

    manifest = read_manifest(store_dir)
    expected = tuple(manifest["image_shape"])
    out = []
    for split, record in manifest["splits"].items():
        for number, shard in enumerate(record["shards"]):
            path = store_file(store_dir, shard["file"], f"split {split!r} shard {number}")
            try:
                with h5py.File(path, "r") as f:
                    shape, dtype = tuple(f["images"].shape[1:]), f["images"].dtype
            except (OSError, KeyError) as exc:
                out.append(f"{path}: cannot read its images ({exc})")
                continue
            if shape != expected or dtype != np.uint8:
                out.append(f"{path}: images are {shape} {dtype}, the manifest's image_shape is {expected} uint8")
    return out
