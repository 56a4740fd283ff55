"""The three release writers: image folder, WebDataset tar shards, Parquet parts.

Each writes one split of a store under OUT/<split>/ and returns the paths it wrote, relative to
OUT. Pixels go out as PNG encoded by `encode_png` from exactly the stored uint8 values, so every
format reloads to the same bytes; labels go out with their masks (missing = empty cell / null).
"""

from __future__ import annotations

import csv
import io
import json
import os
from typing import Callable, Iterator

import numpy as np

from mtlue.errors import ConfigError

TAR_SAMPLES = 1000  # samples per WebDataset shard
PARQUET_ROWS = 10_000  # rows per Parquet part
READ_BATCH = 256
TAR_MTIME = 0  # fixed member metadata: the same store gives byte-identical tars
TAR_OWNER = "mtlue"
PNG_COMPRESS_LEVEL = 6
EXTRA_HINT = "pip install 'mtlue[release]'"


def encode_png(image: np.ndarray) -> bytes:
    """PNG bytes of one stored H×W×C uint8 image ("L" when C == 1, "RGB" when C == 3), deterministically."""
    from PIL import Image

    pixels = image[..., 0] if image.shape[-1] == 1 else image
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels)).save(buffer, format="PNG", optimize=False,
                                                       compress_level=PNG_COMPRESS_LEVEL)
    return buffer.getvalue()


def check_releasable(store) -> None:
    """Raise ConfigError for what a PNG-per-sample release cannot carry losslessly."""
    channels = store.image_shape[-1]
    if channels not in (1, 3):
        raise ConfigError(f"{store.store_dir}: images have {channels} channels; a release writes PNG with 1 (L) "
                          f"or 3 (RGB)")
    dense = [f"{t.name} ({t.kind})" for t in store.tasks if t.kind in ("segmentation", "depth", "normal")]
    if dense:
        raise ConfigError(f"{store.store_dir}: dense task(s) {', '.join(dense)}: a release carries one label per "
                          f"image only")


def label_value(task, value, present: bool):
    """A stored label as the release writes it: int for classes, the shortest float that is the
    same float32 for regression, None where the mask says missing."""
    if not present:
        return None
    if task.is_classification:
        return int(value)
    return float(str(np.float32(value)))  # numpy prints the shortest repr that round-trips float32


def samples(store, split: str) -> Iterator[tuple[int, np.ndarray, dict]]:
    """(index, image, {task: value or None}) of every sample of a split, in store order."""
    for batch in store.batches(split, READ_BATCH):
        for row in range(len(batch)):
            labels = {t.name: label_value(t, batch.labels[t.name][row], bool(batch.masks[t.name][row]))
                      for t in store.tasks}
            yield int(batch.index[row]), batch.images[row], labels


def sample_key(index: int) -> str:
    return f"{index:08d}"


def _needs(module: str, fmt: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigError(f"--format {fmt} needs the release extra: {EXTRA_HINT}") from None


def _chunks(iterable, size: int):
    chunk = []
    for item in iterable:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def write_imagefolder(store, split: str, out_dir: str, tick: Callable[[int], None]) -> list:
    """OUT/<split>/<index:08d>.png and OUT/<split>/metadata.csv (file_name, index, tasks…; empty = missing).

    The layout `datasets.load_dataset("imagefolder", data_dir=OUT)` reads with its labels."""
    os.makedirs(os.path.join(out_dir, split))
    names = [t.name for t in store.tasks]
    files = []
    csv_rel = f"{split}/metadata.csv"
    with open(os.path.join(out_dir, csv_rel), "w", newline="", encoding="utf-8") as fh:
        table = csv.writer(fh, lineterminator="\n")
        table.writerow(["file_name", "index", *names])
        for index, image, labels in samples(store, split):
            name = f"{sample_key(index)}.png"
            with open(os.path.join(out_dir, split, name), "wb") as png:
                png.write(encode_png(image))
            table.writerow([name, index, *("" if labels[n] is None else labels[n] for n in names)])
            files.append(f"{split}/{name}")
            tick(1)
    return [csv_rel, *files]


def write_webdataset(store, split: str, out_dir: str, tick: Callable[[int], None]) -> list:
    """OUT/<split>/shard-<k:06d>.tar, TAR_SAMPLES per tar: "<key>.png" and "<key>.json" per sample.

    webdataset's TarWriter with a fixed mtime, owner and mode writes the same bytes for the same store."""
    wds = _needs("webdataset", "webdataset")
    os.makedirs(os.path.join(out_dir, split))
    files = []
    for number, chunk in enumerate(_chunks(samples(store, split), TAR_SAMPLES)):
        rel = f"{split}/shard-{number:06d}.tar"
        with open(os.path.join(out_dir, rel), "wb") as fh:
            writer = wds.TarWriter(fh, encoder=False, mtime=TAR_MTIME, user=TAR_OWNER, group=TAR_OWNER, mode=0o444)
            for index, image, labels in chunk:
                record = json.dumps({"index": index, "labels": labels}, separators=(",", ":"))
                writer.write({"__key__": sample_key(index), "png": encode_png(image), "json": record.encode()})
                tick(1)
            writer.close()
        files.append(rel)
    return files


def parquet_features(tasks):
    """The `datasets` Features of a Parquet part: HF Image, int64 index, int64 classes / float32 regression."""
    datasets = _needs("datasets", "parquet")
    columns = {"image": datasets.Image(), "index": datasets.Value("int64")}
    for task in tasks:
        columns[task.name] = datasets.Value("int64" if task.is_classification else "float32")
    return datasets.Features(columns)


def write_parquet(store, split: str, out_dir: str, tick: Callable[[int], None]) -> list:
    """OUT/<split>/part-<k:05d>.parquet, PARQUET_ROWS rows each, written by `datasets` so that
    `load_dataset("parquet", …)` decodes the image column as PIL images (PNG bytes kept as written)."""
    datasets = _needs("datasets", "parquet")
    features = parquet_features(store.tasks)
    os.makedirs(os.path.join(out_dir, split))
    files = []
    for number, chunk in enumerate(_chunks(samples(store, split), PARQUET_ROWS)):
        columns = {"image": [{"bytes": encode_png(image), "path": None} for _, image, _ in chunk],
                   "index": [index for index, _, _ in chunk]}
        for task in store.tasks:
            columns[task.name] = [labels[task.name] for _, _, labels in chunk]
        rel = f"{split}/part-{number:05d}.parquet"
        with _quiet_datasets(datasets):
            datasets.Dataset.from_dict(columns, features=features).to_parquet(os.path.join(out_dir, rel))
        tick(len(chunk))
        files.append(rel)
    return files


class _quiet_datasets:
    """`datasets` progress bars off while a part is written (the release has its own bar), restored after."""

    def __init__(self, datasets):
        self.datasets = datasets

    def __enter__(self):
        self.was_enabled = self.datasets.is_progress_bar_enabled()
        self.datasets.disable_progress_bars()

    def __exit__(self, *exc) -> bool:
        if self.was_enabled:
            self.datasets.enable_progress_bars()
        return False


WRITERS = {"imagefolder": write_imagefolder, "webdataset": write_webdataset, "parquet": write_parquet}
FORMAT_LIBRARY = {"imagefolder": None, "webdataset": "webdataset", "parquet": "datasets"}
