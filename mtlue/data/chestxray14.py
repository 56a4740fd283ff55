"""NIH ChestX-ray14: 14 binary thoracic findings per frontal chest X-ray, official train/test lists.

Wang et al., "ChestX-ray8: Hospital-scale Chest X-ray Database and Benchmarks" (CVPR 2017).
Images are grayscale, resized to 256×256; train = train_val_list.txt, test = test_list.txt.
"""

from __future__ import annotations

import csv
import os

import numpy as np

from mtlue.data.base import TaskSpec
from mtlue.data.folder import ImageFileSource, require_path, require_root
from mtlue.errors import SourceError

ENTRY_FILE = "Data_Entry_2017.csv"
SPLIT_FILES = {"train": "train_val_list.txt", "test": "test_list.txt"}
IMAGE_FOLDER = "images"
IMAGE_SIZE = 256
NO_FINDING = "No Finding"
FINDINGS = (
    "Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia",
    "Pneumothorax", "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia",
)
# presence labels survive a mirror image (CheXNet trains with horizontal flips)
CHESTXRAY14_TASKS = tuple(TaskSpec(name, "binary", 2, flip_safe=True) for name in FINDINGS)


def read_entries(path: str) -> tuple[list, np.ndarray]:
    """(image names, findings (N,14) 0/1) from Data_Entry_2017.csv; unknown findings raise."""
    with open(path, newline="") as handle:
        reader = csv.reader(handle)
        header = [cell.strip() for cell in next(reader, [])]
        for column in ("Image Index", "Finding Labels"):
            if column not in header:
                raise SourceError(f"{path}: missing column {column!r}")
        file_column, finding_column = header.index("Image Index"), header.index("Finding Labels")
        files, findings = [], []
        column_of = {name: k for k, name in enumerate(FINDINGS)}
        for row, cells in enumerate(r for r in reader if r):
            if len(cells) <= max(file_column, finding_column):
                raise SourceError(f"{path}: row {row}: only {len(cells)} columns")
            name = cells[file_column].strip()
            present = np.zeros(len(FINDINGS), dtype=np.int8)
            for finding in cells[finding_column].split("|"):
                finding = finding.strip()
                if finding == NO_FINDING:
                    continue
                if finding not in column_of:
                    raise SourceError(f"{path}: row {row} ({name}), column 'Finding Labels': unknown finding "
                                      f"{finding!r} (known: {', '.join(FINDINGS)}, {NO_FINDING})")
                present[column_of[finding]] = 1
            files.append(name)
            findings.append(present)
    return files, np.stack(findings) if findings else np.zeros((0, len(FINDINGS)), dtype=np.int8)


def read_name_list(path: str) -> list:
    with open(path) as handle:
        return [line.strip() for line in handle if line.strip()]


class ChestXray14Source(ImageFileSource):
    """ChestX-ray14 with its 14 findings as binary tasks; 256×256 grayscale; official split lists."""

    name = "chestxray14"
    generator_stem = "imagenet"  # the reference ChestX-ray14 config: imagenet True (S = 32 at 256 px)
    spec_help = "chestxray14:PATH"
    summary = ("NIH ChestX-ray14 official layout (images/, Data_Entry_2017.csv, train_val_list.txt, test_list.txt); "
               "14 binary findings; resized to 256x256 grayscale")

    @classmethod
    def from_spec(cls, arg: str | None, seed: int | None = None) -> "ChestXray14Source":
        return cls.load(require_root("chestxray14", arg))

    @classmethod
    def task_help(cls) -> list:
        return [f"14 binary tasks (finding present = 1): {', '.join(FINDINGS)}",
                "'No Finding' rows are 0 on every task"]

    @classmethod
    def load(cls, root: str) -> "ChestXray14Source":
        entry_path = os.path.join(root, ENTRY_FILE)
        image_root = os.path.join(root, IMAGE_FOLDER)
        require_path("chestxray14", entry_path)
        require_path("chestxray14", image_root, directory=True)
        for file_name in SPLIT_FILES.values():
            require_path("chestxray14", os.path.join(root, file_name))

        files, findings = read_entries(entry_path)
        row_of = {name: row for row, name in enumerate(files)}
        on_disk = set(os.listdir(image_root))
        split_rows, split_of = {}, {}
        for split, file_name in SPLIT_FILES.items():
            list_path = os.path.join(root, file_name)
            rows = []
            for name in read_name_list(list_path):
                if name not in row_of:
                    raise SourceError(f"{list_path}: {name} has no row in {entry_path}")
                if name in split_of:
                    raise SourceError(f"{list_path}: {name} is also listed in {SPLIT_FILES[split_of[name]]}")
                if name not in on_disk:
                    raise SourceError(f"{list_path}: {name} is not in {image_root}")
                split_of[name] = split
                rows.append(row_of[name])
            split_rows[split] = np.sort(np.asarray(rows, dtype=np.int64))
        labels = {name: findings[:, k] for k, name in enumerate(FINDINGS)}
        masks = {name: np.ones(len(files), dtype=bool) for name in FINDINGS}
        return cls(image_root, files, split_rows, CHESTXRAY14_TASKS, labels, masks, (IMAGE_SIZE, IMAGE_SIZE, 1))
