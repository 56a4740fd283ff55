"""Image files plus a label table: the generic `folder:PATH` source and the base of the official layouts.

`folder:PATH` reads `PATH/labels.csv` (column `file`, optional `split`, one column per task) and an
optional `PATH/tasks.json` declaring task kinds (and `"flip_safe": true` for tasks whose label survives a
horizontal flip: only then does the standard victim augmentation flip); everything else is inferred.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os

import numpy as np

from mtlue.data.base import Sample, Source, TaskSpec, label_dtype
from mtlue.errors import SourceError

TEST_FRACTION = 0.2


def one_line(error: Exception) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def read_image(path: str, mode: str, size: tuple | None = None, crop: tuple | None = None) -> np.ndarray:
    """Decode an image file as uint8 H×W×C: convert to `mode`, centre-crop to `crop` (w, h), resize to `size` (w, h)."""
    from PIL import Image

    try:
        with Image.open(path) as opened:
            image = opened.convert(mode)
    except (OSError, ValueError, SyntaxError) as error:  # PIL raises these for truncated / unknown files
        raise SourceError(f"{path}: unreadable image ({one_line(error)})") from None
    if crop is not None and image.size != tuple(crop):
        left, top = (image.size[0] - crop[0]) // 2, (image.size[1] - crop[1]) // 2
        image = image.crop((left, top, left + crop[0], top + crop[1]))
    if size is not None and image.size != tuple(size):
        image = image.resize(tuple(size), Image.BILINEAR)
    array = np.asarray(image, dtype=np.uint8)
    return array[..., None] if array.ndim == 2 else array


def seeded_split(num_rows: int, seed: int, test_fraction: float = TEST_FRACTION) -> dict:
    """Rows of a deterministic train/test split: a seeded permutation's first `test_fraction` is test."""
    permutation = np.random.default_rng(seed).permutation(num_rows)
    num_test = int(round(num_rows * test_fraction))
    if num_rows >= 2:
        num_test = min(max(num_test, 1), num_rows - 1)
    return {"train": np.sort(permutation[num_test:]), "test": np.sort(permutation[:num_test])}


def require_path(source_name: str, path: str, directory: bool = False) -> None:
    exists = os.path.isdir(path) if directory else os.path.isfile(path)
    if not exists:
        raise SourceError(f"{source_name}: missing {'folder' if directory else 'file'} {path}")


def require_root(source_name: str, arg: str | None) -> str:
    if not arg:
        raise SourceError(f"{source_name}: needs a path, as in {source_name}:PATH")
    require_path(source_name, arg, directory=True)
    return arg


class ImageFileSource(Source):
    """A Source over image files listed row by row with in-memory label arrays.

    `files[row]` is relative to `image_root`; `split_rows[split]` lists the rows of a split in order;
    `labels[task]` / `masks[task]` are arrays over all rows. `Sample.index` is the row.
    Subclasses set these and `image_shape`, and may override `read_row` for their preprocessing.
    """

    def __init__(self, image_root: str, files: list, split_rows: dict, tasks: tuple, labels: dict, masks: dict,
                 image_shape: tuple):
        self.image_root = image_root
        self.files = files
        self.split_rows = {split: np.asarray(rows, dtype=np.int64) for split, rows in split_rows.items()}
        self.tasks = tuple(tasks)
        self.labels = labels
        self.masks = masks
        self.image_shape = tuple(image_shape)

    def size(self, split: str) -> int:
        self.check_split(split)
        return len(self.split_rows[split])

    def image_mode(self) -> str:
        return "L" if self.image_shape[2] == 1 else "RGB"

    def read_row(self, row: int) -> np.ndarray:
        height, width = self.image_shape[:2]
        return read_image(os.path.join(self.image_root, self.files[row]), self.image_mode(), size=(width, height))

    def get(self, split: str, position: int) -> Sample:
        self.check_split(split)
        if not 0 <= position < self.size(split):
            raise IndexError(f"{self.name} {split}: position {position} out of range 0..{self.size(split) - 1}")
        row = int(self.split_rows[split][position])
        labels = {t.name: self.labels[t.name][row].item() for t in self.tasks}
        mask = {t.name: bool(self.masks[t.name][row]) for t in self.tasks}
        return Sample(row, self.read_row(row), labels, mask)

    def index_array(self, split: str) -> np.ndarray:
        self.check_split(split)
        return self.split_rows[split].copy()

    def sample_names(self) -> str:
        return "\n".join(self.files)

    def image_digest(self) -> str:
        """Every listed file's name, size and modification time (no pixel is decoded), plus the size
        images are read at; a replaced or edited image changes it."""
        digest = hashlib.sha256(repr((type(self).__name__, tuple(self.image_shape))).encode())
        for name in self.files:
            try:
                status = os.stat(os.path.join(self.image_root, name))
                digest.update(f"{name}\0{status.st_size}\0{status.st_mtime_ns}\n".encode())
            except OSError:
                digest.update(f"{name}\0missing\n".encode())
        return digest.hexdigest()

    def label_array(self, split: str, task: str) -> tuple[np.ndarray, np.ndarray]:
        """Labels come from the label table; no image is read."""
        self.check_split(split)
        spec = self.task(task)
        rows = self.split_rows[split]
        return self.labels[task][rows].astype(label_dtype(spec)), self.masks[task][rows].copy()


def load_task_declarations(path: str) -> list:
    """tasks.json as a list of TaskSpec: `{"task": {"kind": .., "num_classes": ..}}` or a list of such dicts."""
    try:
        with open(path) as handle:
            declared = json.load(handle)
    except (OSError, ValueError) as error:
        raise SourceError(f"{path}: cannot read ({one_line(error)})") from None
    if isinstance(declared, dict):
        declared = [{"name": name, **(spec if isinstance(spec, dict) else {"kind": spec})}
                    for name, spec in declared.items()]
    if not isinstance(declared, list):
        raise SourceError(f"{path}: expected an object or a list of tasks")
    tasks = []
    for entry in declared:
        if not isinstance(entry, dict) or "name" not in entry or "kind" not in entry:
            raise SourceError(f"{path}: each task needs a name and a kind, got {entry!r}")
        kind = entry["kind"]
        if kind not in ("binary", "multiclass", "regression"):
            raise SourceError(f"{path}: task {entry['name']!r}: folder supports binary, multiclass and regression, "
                              f"got {kind!r}")
        num_classes = entry.get("num_classes", {"binary": 2, "regression": 1}.get(kind))
        if num_classes is None:
            raise SourceError(f"{path}: task {entry['name']!r} of kind {kind!r} needs num_classes")
        flip_safe = entry.get("flip_safe", False)
        if not isinstance(flip_safe, bool):
            raise SourceError(f"{path}: task {entry['name']!r}: flip_safe must be true or false, got {flip_safe!r}")
        tasks.append(TaskSpec(str(entry["name"]), kind, int(num_classes), flip_safe=flip_safe))
    return tasks


def infer_task(csv_path: str, column: str, cells: list, lines: list | None = None) -> TaskSpec:
    """Kind from the non-empty values: all in {0,1} → binary, non-negative integers → multiclass,
    numbers (mostly non-integer) → regression. A column that looks like class labels but holds a
    negative or fractional value is an error, never silently a regression: declare it in tasks.json."""
    lines = lines or [row + 2 for row in range(len(cells))]
    values = [(row, cell) for row, cell in enumerate(cells) if cell != ""]
    if not values:
        raise SourceError(f"{csv_path}: column {column!r} has no labels")
    integers, fractional = [], []
    for row, cell in values:
        try:
            integers.append((row, int(cell)))
        except ValueError:
            try:
                float(cell)
            except ValueError:
                raise SourceError(f"{csv_path}: line {lines[row]}, column {column!r}: {cell!r} is not a number") from None
            fractional.append((row, cell))
    declare = f"declare the task's kind in tasks.json if column {column!r} is meant that way"
    if not fractional:
        negative = next(((row, v) for row, v in integers if v < 0), None)
        if negative is not None:
            raise SourceError(f"{csv_path}: line {lines[negative[0]]}, column {column!r}: {negative[1]} is not a class "
                              f"label (classes are 0..C-1, and every other value is an integer); {declare} "
                              f"(e.g. regression)")
        top = max(v for _, v in integers)
        return TaskSpec(column, "binary", 2) if top <= 1 else TaskSpec(column, "multiclass", top + 1)
    if len(fractional) < len(values) / 2:
        row, cell = fractional[0]
        raise SourceError(f"{csv_path}: line {lines[row]}, column {column!r}: {cell!r} is not a class label, yet "
                          f"{len(integers)} of the column's {len(values)} values are integers; fix the cell, or "
                          f"{declare} (regression)")
    return TaskSpec(column, "regression", 1)


def parse_labels(csv_path: str, files: list, task: TaskSpec, cells: list,
                 lines: list | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One task's labels and masks; an empty cell is a missing label, a value outside the task's range
    an error naming the CSV line (`lines[row]`, 1-based with the header on line 1)."""
    lines = lines or [row + 2 for row in range(len(cells))]
    labels = np.zeros(len(cells), dtype=label_dtype(task))
    masks = np.zeros(len(cells), dtype=bool)
    for row, cell in enumerate(cells):
        if cell == "":
            continue
        try:
            value = int(cell) if task.is_classification else float(cell)
        except ValueError:
            value = None
        if value is None or (task.is_classification and not 0 <= value < task.num_classes):
            expected = f"0..{task.num_classes - 1}" if task.is_classification else "a number"
            raise SourceError(f"{csv_path}: line {lines[row]} ({files[row]}), task {task.name!r}: label {cell!r} "
                              f"outside {expected}")
        labels[row], masks[row] = value, True
    return labels, masks


class FolderSource(ImageFileSource):
    """Images plus labels.csv (`file`, optional `split`, task columns); 80/20 seeded split without `split`."""

    name = "folder"
    spec_help = "folder:PATH"
    summary = ("images + PATH/labels.csv (file, optional split, one column per task) and optional tasks.json; "
               "80/20 split by seed when there is no split column")

    @classmethod
    def from_spec(cls, arg: str | None, seed: int | None = None) -> "FolderSource":
        return cls.load(require_root("folder", arg), seed=0 if seed is None else seed)

    @classmethod
    def task_help(cls) -> list:
        return [
            "one task per labels.csv column other than file/split, or the tasks tasks.json declares",
            "kinds inferred: values all in {0,1} -> binary; non-negative integers -> multiclass (C = max+1); "
            "other numbers -> regression",
            "an empty cell is a missing label; images take the first image's size; the store is RGB when any "
            "image is in colour (grayscale ones are replicated), L when all are grayscale",
            'tasks.json may mark a task "flip_safe": true (its label survives a horizontal flip); default false',
        ]

    @classmethod
    def load(cls, root: str, seed: int = 0) -> "FolderSource":
        csv_path = os.path.join(root, "labels.csv")
        require_path("folder", csv_path)
        columns, rows, lines = read_label_table(csv_path)
        if "file" not in columns:
            raise SourceError(f"{csv_path}: missing column 'file' (header: {', '.join(columns) or 'empty'})")
        if not rows:
            raise SourceError(f"{csv_path}: no data rows")
        cells_of = {column: [row[k] if k < len(row) else "" for row in rows] for k, column in enumerate(columns)}
        files = cells_of["file"]
        seen = {}
        for row, name in enumerate(files):
            if name in seen:
                raise SourceError(f"{csv_path}: line {lines[row]}: {name!r} is listed again (first on line "
                                  f"{lines[seen[name]]}); one image once, or it could sit in train and test")
            seen[name] = row
            if not os.path.isfile(os.path.join(root, name)):
                raise SourceError(f"{csv_path}: line {lines[row]}: image file {name!r} not found under {root}")

        tasks_path = os.path.join(root, "tasks.json")
        if os.path.isfile(tasks_path):
            tasks = load_task_declarations(tasks_path)
            for task in tasks:
                if task.name not in cells_of:
                    raise SourceError(f"{csv_path}: missing column {task.name!r} (declared in tasks.json)")
        else:
            tasks = [infer_task(csv_path, c, cells_of[c], lines) for c in columns if c not in ("file", "split")]
        if not tasks:
            raise SourceError(f"{csv_path}: no task columns besides file/split")
        labels, masks = {}, {}
        for task in tasks:
            labels[task.name], masks[task.name] = parse_labels(csv_path, files, task, cells_of[task.name], lines)

        if "split" in cells_of:
            split_rows = {"train": [], "test": []}
            for row, value in enumerate(cells_of["split"]):
                if value not in split_rows:
                    raise SourceError(f"{csv_path}: line {lines[row]} ({files[row]}): split {value!r} is not train "
                                      f"or test")
                split_rows[value].append(row)
        else:
            split_rows = seeded_split(len(files), seed)

        modes = {name: image_mode_of(os.path.join(root, name)) for name in files}
        mode = "RGB" if "RGB" in modes.values() else "L"  # one colour image keeps the store in colour
        first = read_image(os.path.join(root, files[0]), mode=mode)
        return cls(root, files, split_rows, tuple(tasks), labels, masks, first.shape)


def read_label_table(csv_path: str) -> tuple[list, list, list]:
    """(header, data rows, 1-based file line of each row) of labels.csv; a UTF-8 BOM is ignored and
    blank lines are skipped."""
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            table = [([cell.strip() for cell in row], reader.line_num) for row in reader if any(c.strip() for c in row)]
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise SourceError(f"{csv_path}: cannot read ({one_line(error)})") from None
    if not table:
        return [], [], []
    return table[0][0], [row for row, _ in table[1:]], [line for _, line in table[1:]]


def image_mode_of(path: str) -> str:
    """L for single-channel images (L, 1, I, F, LA), else RGB; reads the header only."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            return "L" if image.mode in ("L", "1", "I", "F", "I;16", "LA") else "RGB"
    except (OSError, ValueError, SyntaxError) as error:
        raise SourceError(f"{path}: unreadable image ({one_line(error)})") from None
