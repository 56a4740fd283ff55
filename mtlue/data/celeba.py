"""CelebA in its official aligned layout: 40 binary face attributes.

Liu et al., "Deep Learning Face Attributes in the Wild" (ICCV 2015). Preprocessing follows MTL-UE
(ICML 2025): centre-crop 140×140 of the aligned 178×218 image, resize to 70×70 RGB.
Train = partition 0, test = partition 2 of `list_eval_partition.txt` (validation unused).
"""

from __future__ import annotations

import os

import numpy as np

from mtlue.data.base import TaskSpec
from mtlue.data.folder import ImageFileSource, read_image, require_path, require_root
from mtlue.errors import SourceError

ATTRIBUTE_FILE = "list_attr_celeba.txt"
PARTITION_FILE = "list_eval_partition.txt"
IMAGE_FOLDER = "img_align_celeba"
CROP_SIZE = 140
IMAGE_SIZE = 70
PARTITIONS = {"train": "0", "test": "2"}  # "1" (validation) is not used


def read_attribute_file(path: str) -> tuple[list, list, np.ndarray]:
    """(attribute names, file names, labels (N,40) in {0,1}) from list_attr_celeba.txt; values must be ±1."""
    with open(path) as handle:
        count_line, names = handle.readline().split(), handle.readline().split()
        files = [line.split(None, 1)[0] for line in handle if line.strip()]
    if not names:
        raise SourceError(f"{path}: expected a count line and an attribute-name line")
    try:
        declared_count = int(count_line[0])
    except (ValueError, IndexError):
        raise SourceError(f"{path}: line 1 should be the number of images, got {' '.join(count_line)!r}") from None
    if declared_count != len(files):
        raise SourceError(f"{path}: line 1 declares {declared_count} images but {len(files)} rows follow")
    try:  # numpy's C parser: ~1 s for the 202,599 official rows
        table = np.loadtxt(path, skiprows=2, usecols=range(1, len(names) + 1), dtype=np.int64, ndmin=2)
    except ValueError:
        table = None
    if table is None or table.shape != (len(files), len(names)) or not np.isin(table, (-1, 1)).all():
        raise_first_bad_attribute_row(path, names)
    return names, files, (table == 1).astype(np.int8)


def raise_first_bad_attribute_row(path: str, names: list) -> None:
    """Find and report the first row with a wrong value count or a value other than -1/1."""
    with open(path) as handle:
        rows = [line.split() for line in handle if line.strip()][2:]
    for row, tokens in enumerate(rows):
        if len(tokens) != len(names) + 1:
            raise SourceError(f"{path}: row {row} ({tokens[0]}): {len(tokens) - 1} values for {len(names)} attributes")
        for column, token in enumerate(tokens[1:]):
            if token not in ("1", "-1"):
                raise SourceError(f"{path}: row {row} ({tokens[0]}), task {names[column]!r}: "
                                  f"value {token!r} not in {{-1, 1}}")
    raise SourceError(f"{path}: cannot parse the attribute rows")


def read_partition_file(path: str) -> dict:
    """file name → partition id ('0' train, '1' val, '2' test)."""
    partition = {}
    with open(path) as handle:
        for line_number, line in enumerate(handle, start=1):
            tokens = line.split()
            if not tokens:
                continue
            if len(tokens) != 2 or tokens[1] not in ("0", "1", "2"):
                raise SourceError(f"{path}: line {line_number}: expected 'file 0|1|2', got {line.strip()!r}")
            partition[tokens[0]] = tokens[1]
    return partition


class CelebASource(ImageFileSource):
    """CelebA aligned faces, 40 binary attributes; images read lazily, centre-cropped 140 → 70 px."""

    name = "celeba"
    generator_stem = "cifar"  # the reference CelebA config: imagenet False (3x3 stem, S = 35 at 70 px)
    spec_help = "celeba:PATH"
    summary = ("CelebA official layout (img_align_celeba/, list_attr_celeba.txt, list_eval_partition.txt); "
               "40 binary attributes; train = partition 0, test = partition 2; centre-crop 140 -> 70x70 RGB")

    @classmethod
    def from_spec(cls, arg: str | None, seed: int | None = None) -> "CelebASource":
        return cls.load(require_root("celeba", arg))

    @classmethod
    def task_help(cls) -> list:
        return ["40 binary tasks, one per attribute named on line 2 of list_attr_celeba.txt "
                "(5_o_Clock_Shadow ... Young); -1 -> 0, 1 -> 1"]

    @classmethod
    def load(cls, root: str) -> "CelebASource":
        attribute_path = os.path.join(root, ATTRIBUTE_FILE)
        partition_path = os.path.join(root, PARTITION_FILE)
        image_root = os.path.join(root, IMAGE_FOLDER)
        require_path("celeba", attribute_path)
        require_path("celeba", partition_path)
        require_path("celeba", image_root, directory=True)

        names, files, values = read_attribute_file(attribute_path)
        partition = read_partition_file(partition_path)
        on_disk = set(os.listdir(image_root))
        for name in files:
            if name not in partition:
                raise SourceError(f"{attribute_path}: {name} has no entry in {partition_path}")
            if name not in on_disk:
                raise SourceError(f"{attribute_path}: {name} is not in {image_root}")
        if len(partition) != len(files):
            listed = set(files)
            extra = next(name for name in partition if name not in listed)
            raise SourceError(f"{partition_path}: {extra} has no row in {attribute_path}")

        part_of_row = np.asarray([partition[name] for name in files])
        split_rows = {split: np.flatnonzero(part_of_row == part) for split, part in PARTITIONS.items()}
        tasks = tuple(TaskSpec(name, "binary", 2, flip_safe=True) for name in names)  # face attributes survive a mirror
        labels = {name: values[:, k] for k, name in enumerate(names)}
        masks = {name: np.ones(len(files), dtype=bool) for name in names}
        return cls(image_root, files, split_rows, tasks, labels, masks, (IMAGE_SIZE, IMAGE_SIZE, 3))

    def read_row(self, row: int) -> np.ndarray:
        return read_image(os.path.join(self.image_root, self.files[row]), "RGB",
                          size=(IMAGE_SIZE, IMAGE_SIZE), crop=(CROP_SIZE, CROP_SIZE))
