"""Write one shard file: validate each Batch, stream it into chunked, checksummed HDF5 datasets."""

from __future__ import annotations

import json
import os
from typing import Iterable

import h5py
import numpy as np

from mtlue.data.base import Batch, TaskSpec, label_dtype
from mtlue.errors import StoreError
from mtlue.store.layout import COMPRESSION, COMPRESSION_LEVEL, SHARD_SCHEMA, TMP_SUFFIX, chunk_rows, fsync_replace

WRITE_CACHE_BYTES = 8 * 1024 * 1024  # keeps a chunk that a batch fills only partly in memory until the next batch


def validate_batch(batch: Batch, tasks: tuple, image_shape: tuple, where: str, first_position: int) -> dict:
    """Check a batch against the store's image shape and task specs; return its label arrays cast to store dtypes.

    Raises StoreError naming the task and the sample position (split position, and its global index).
    """
    images = batch.images
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8:
        found = getattr(images, "dtype", type(images).__name__)
        raise StoreError(f"{where}: images must be a uint8 array, got {found} (positions from {first_position})")
    count = len(images)
    if images.shape[1:] != tuple(image_shape):
        raise StoreError(
            f"{where}: images of shape {images.shape[1:]} at positions {first_position}.., "
            f"the store holds {tuple(image_shape)} (H, W, C)"
        )
    index = np.asarray(batch.index)
    if index.shape != (count,) or not np.issubdtype(index.dtype, np.integer):
        raise StoreError(f"{where}: index must be {count} integers, got {index.dtype} {index.shape}")
    labels, masks = {}, {}
    for task in tasks:
        if task.name not in batch.labels:
            raise StoreError(f"{where}: batch has no labels for task {task.name!r}")
        values = np.asarray(batch.labels[task.name])
        mask = np.asarray(batch.masks.get(task.name, np.ones(count, dtype=bool)))
        if values.shape[:1] != (count,) or mask.shape != (count,):
            raise StoreError(
                f"{where}: task {task.name!r} has {values.shape[:1]} labels and {mask.shape} masks for {count} images"
            )
        mask = mask.astype(bool)
        if task.is_dense:
            _check_dense_labels(task, values, mask, index, tuple(image_shape[:2]), where)
        else:
            _check_label_values(task, values, mask, index, where)
        labels[task.name] = values.astype(label_dtype(task), copy=False)
        masks[task.name] = mask
    return {"index": index.astype(np.int64, copy=False), "labels": labels, "masks": masks}


# per-sample dense label shape after (H, W) (layouts: mtlue.data.dense)
DENSE_LABEL_SHAPES = {"segmentation": (), "depth": (1,), "normal": (3,)}


def _check_dense_labels(task: TaskSpec, values: np.ndarray, mask: np.ndarray, index: np.ndarray,
                        image_hw: tuple, where: str) -> None:
    """Dense labels: (N,H,W) class ids in −1..C−1 (−1 void), (N,H,W,1) depth ≥ 0 (0 invalid), (N,H,W,3)
    normals with components in [−1, 1] ((0,0,0) invalid); all finite, at the image's H×W."""
    wanted = image_hw + DENSE_LABEL_SHAPES[task.kind]
    if values.shape[1:] != wanted:
        raise StoreError(f"{where}: task {task.name!r} ({task.kind}) needs labels of shape {wanted} per sample "
                         f"(the image's H, W), got {values.shape[1:]}")
    flat = values.reshape(len(values), -1)
    if task.kind == "segmentation":
        if not np.issubdtype(values.dtype, np.integer):
            whole = (np.isfinite(flat) & (np.round(flat) == flat)).all(1)
            bad = np.flatnonzero(mask & ~whole)
            if len(bad):
                raise StoreError(f"{where}: task {task.name!r}: sample index {int(index[bad[0]])} has a class id "
                                 "that is not a whole number")
        outside = ((flat < -1) | (flat >= task.num_classes)).any(1)
        what = f"a class id outside -1..{task.num_classes - 1}"
    else:
        low = 0.0 if task.kind == "depth" else -1.0 - 1e-3
        high = np.inf if task.kind == "depth" else 1.0 + 1e-3
        outside = ~(np.isfinite(flat) & (flat >= low) & (flat <= high)).all(1)
        what = "a negative or non-finite depth" if task.kind == "depth" else "a normal component outside [-1, 1]"
    bad = np.flatnonzero(mask & outside)
    if len(bad):
        raise StoreError(f"{where}: task {task.name!r}: sample index {int(index[bad[0]])} has {what}")


def _check_label_values(task: TaskSpec, values: np.ndarray, mask: np.ndarray, index: np.ndarray, where: str) -> None:
    if task.is_classification:
        if values.ndim != 1:
            raise StoreError(f"{where}: task {task.name!r} ({task.kind}) needs one label per sample, "
                             f"got shape {values.shape}")
        if not (np.issubdtype(values.dtype, np.integer) or np.issubdtype(values.dtype, np.bool_)):
            whole = np.isfinite(values) & (np.round(values) == values)
            bad = np.flatnonzero(mask & ~whole)
            if len(bad):
                raise StoreError(f"{where}: task {task.name!r}: label {values[bad[0]].item()!r} of sample index "
                                 f"{int(index[bad[0]])} is not a whole number")
        bad = np.flatnonzero(mask & ((values < 0) | (values >= task.num_classes)))
        if len(bad):
            raise StoreError(
                f"{where}: task {task.name!r}: label {values[bad[0]].item()!r} of sample index {int(index[bad[0]])} "
                f"is outside 0..{task.num_classes - 1}"
            )
    elif np.issubdtype(values.dtype, np.floating):
        finite = np.isfinite(values).reshape(len(values), -1).all(axis=1)
        bad = np.flatnonzero(mask & ~finite)
        if len(bad):
            raise StoreError(f"{where}: task {task.name!r}: sample index {int(index[bad[0]])} has a non-finite label")


def _create(group, name: str, shape: tuple, dtype) -> h5py.Dataset:
    rows = chunk_rows(shape[1:], np.dtype(dtype).itemsize, shape[0])
    return group.create_dataset(
        name, shape=shape, dtype=dtype, chunks=(rows,) + tuple(shape[1:]),
        compression=COMPRESSION, compression_opts=COMPRESSION_LEVEL, shuffle=True, fletcher32=True,
        track_times=False,  # no timestamps: the same inputs give byte-identical shards
    )


def write_shard(path: str, batches: Iterable[Batch], count: int, first_position: int, tasks: tuple,
                image_shape: tuple, attrs: dict, on_rows=None) -> None:
    """Stream `count` samples from `batches` into `path` via `path.tmp` (renamed only when complete).

    The tmp file is left behind on error; the caller decides whether to remove it.
    """
    tmp_path = path + TMP_SUFFIX
    where = os.path.join(os.path.basename(os.path.dirname(path)), os.path.basename(path))  # split/shard
    with h5py.File(tmp_path, "w", rdcc_nbytes=WRITE_CACHE_BYTES) as f:
        for key, value in attrs.items():
            f.attrs[key] = value
        f.attrs["schema"] = SHARD_SCHEMA
        f.attrs["tasks"] = json.dumps([t.to_json() for t in tasks])
        f.attrs["count"] = count
        images = _create(f, "images", (count,) + tuple(image_shape), np.uint8)
        index = _create(f, "index", (count,), np.int64)
        label_group = f.create_group("labels", track_order=True)  # tasks listed in task order
        mask_group = f.create_group("masks", track_order=True)
        label_sets, mask_sets = {}, {}
        written = 0
        for batch in batches:
            n = len(batch.images)
            if written + n > count:
                raise StoreError(f"{where}: got more than the {count} samples of positions "
                                 f"{first_position}..{first_position + count - 1}")
            checked = validate_batch(batch, tasks, image_shape, where, first_position + written)
            if not label_sets:  # dense label shapes are known only once the first batch arrives
                for t in tasks:
                    values = checked["labels"][t.name]
                    label_sets[t.name] = _create(label_group, t.name, (count,) + values.shape[1:], values.dtype)
                    mask_sets[t.name] = _create(mask_group, t.name, (count,), bool)
            for t in tasks:
                shape, earlier = checked["labels"][t.name].shape[1:], label_sets[t.name].shape[1:]
                if shape != earlier:
                    raise StoreError(f"{where}: task {t.name!r}: labels of shape {shape} at positions "
                                     f"{first_position + written}.., earlier ones {earlier}")
            rows = slice(written, written + n)
            images[rows] = batch.images
            index[rows] = checked["index"]
            for t in tasks:
                label_sets[t.name][rows] = checked["labels"][t.name]
                mask_sets[t.name][rows] = checked["masks"][t.name]
            written += n
            if on_rows is not None:
                on_rows(n)
        if written != count:
            raise StoreError(f"{where}: got {written} samples, expected {count} "
                             f"(positions {first_position}..{first_position + count - 1})")
    fsync_replace(tmp_path, path)
