"""A split's metadata as arrays (SplitTable), built sample by sample from any format, and image decoding."""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np

from mtlue.data.base import TaskSpec, label_dtype
from mtlue.data.release.layout import IMAGE_MODES
from mtlue.errors import StoreError


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


class TableBuilder:
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
