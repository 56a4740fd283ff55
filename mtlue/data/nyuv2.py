"""NYUv2 in the preprocessed layout MTAN, LibMTL and Nash-MTL share: 13-class segmentation, depth, normals.

```
PATH/train/{image,label,depth,normal}/{0..794}.npy    795 samples  -> split 'train'
PATH/val/{image,label,depth,normal}/{0..653}.npy      654 samples  -> split 'test' (the official test split)
```
Files are indexed, not listed (as the reference loaders read them): names are 0.npy … N−1.npy with no
gap and the same count in the four folders of a split. Arrays, as they ship (288×384; any H×W works):
image (H,W,3) float in [0, 1] (exact k/255 values, stored as uint8 by round(x·255)) or uint8; label
(H,W) class ids −1…12 in a float or integer dtype, −1 = void; depth (H,W,1) (or (H,W)) metres ≥ 0,
0 = invalid; normal (H,W,3) unit vectors in the camera frame, x to the right (negated by a horizontal
flip), (0,0,0) = invalid. Headers (shape, dtype) of every file are checked when the source opens and
values when a file is read; each error is one line naming the file.
"""

from __future__ import annotations

import hashlib
import os

import numpy as np

from mtlue.data.base import NumberedSource, Sample, TaskSpec
from mtlue.data.folder import require_root
from mtlue.errors import SourceError

NUM_CLASSES = 13
KINDS = ("image", "label", "depth", "normal")
SPLIT_FOLDERS = {"train": "train", "test": "val"}
NYUV2_TASKS = (
    TaskSpec("segmentation", "segmentation", NUM_CLASSES, flip_safe=True),
    TaskSpec("depth", "depth", 1, flip_safe=True),
    TaskSpec("normal", "normal", 3, flip_safe=True),  # a flip negates normal x (mtlue.data.dense.hflip_label)
)


def npy_header(path: str) -> tuple[tuple, np.dtype]:
    """(shape, dtype) of a .npy file from its header, without reading the array."""
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)  # maps the data, reads only the header
    except (OSError, ValueError, EOFError) as exc:
        raise SourceError(f"{path}: not a readable .npy file ({_first_line(exc)})") from None
    shape, dtype = tuple(array.shape), array.dtype
    del array
    return shape, dtype


def _first_line(exc: Exception) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def indexed_files(folder: str) -> int:
    """How many files 0.npy … N−1.npy `folder` holds; SourceError naming the first file out of order."""
    if not os.path.isdir(folder):
        raise SourceError(f"{folder}: missing folder (the NYUv2 layout has train|val/{{{','.join(KINDS)}}}/N.npy)")
    numbers = []
    for name in sorted(os.listdir(folder)):
        if not name.endswith(".npy"):
            continue
        stem = name[:-4]
        if not stem.isdigit() or (len(stem) > 1 and stem.startswith("0")):
            raise SourceError(f"{os.path.join(folder, name)}: not named by a sample number (files are 0.npy … N-1.npy)")
        numbers.append(int(stem))
    numbers.sort()
    for expected, number in enumerate(numbers):
        if number != expected:
            raise SourceError(f"{os.path.join(folder, f'{expected}.npy')}: missing, but {number}.npy exists "
                              f"(names must run 0.npy … {len(numbers) - 1}.npy without a gap)")
    return len(numbers)


class NYUv2Source(NumberedSource):
    """The preprocessed NYUv2 folders: tasks segmentation (13 classes), depth and normal."""

    name = "nyuv2"
    tasks = NYUV2_TASKS
    generator_stem = "imagenet"  # 288×384
    spec_help = "nyuv2:PATH"
    summary = ("NYUv2 as MTAN/LibMTL preprocess it: PATH/train|val/{image,label,depth,normal}/N.npy "
               "(795 train / 654 test; val is the official test split)")

    def __init__(self, root: str):
        self.root = os.fspath(root)  # a missing root is reported by the first folder it lacks
        self.counts, self.image_shape = {}, None
        for split, folder in SPLIT_FOLDERS.items():
            counts = {kind: indexed_files(os.path.join(self.root, folder, kind)) for kind in KINDS}
            if len(set(counts.values())) != 1:
                detail = ", ".join(f"{kind} {n}" for kind, n in counts.items())
                raise SourceError(f"{os.path.join(self.root, folder)}: the four folders hold different numbers of "
                                  f"files ({detail})")
            if counts["image"] == 0:
                raise SourceError(f"{os.path.join(self.root, folder, 'image')}: holds no .npy file")
            self.counts[split] = counts["image"]
            for position in range(self.counts[split]):
                self._check_headers(split, position)

    @classmethod
    def from_spec(cls, arg: str | None, seed: int | None = None) -> "NYUv2Source":
        return cls(require_root("nyuv2", arg))

    @classmethod
    def task_help(cls) -> list:
        return [
            f"segmentation  segmentation {NUM_CLASSES}  13 classes (bed … window); -1 void",
            "depth         depth           metres; 0 invalid",
            "normal        normal          unit normals, camera frame (x right); (0,0,0) invalid",
        ]

    def path(self, split: str, kind: str, position: int) -> str:
        return os.path.join(self.root, SPLIT_FOLDERS[split], kind, f"{position}.npy")

    def _check_headers(self, split: str, position: int) -> None:
        for kind in KINDS:
            path = self.path(split, kind, position)
            shape, dtype = npy_header(path)
            if self.image_shape is None:  # the first image sets H×W for every file
                if len(shape) != 3 or shape[2] != 3:
                    raise SourceError(f"{path}: image of shape {shape}, expected (H, W, 3)")
                self.image_shape = (int(shape[0]), int(shape[1]), 3)
            height, width = self.image_shape[:2]
            wanted = {"image": [(height, width, 3)], "label": [(height, width)],
                      "depth": [(height, width, 1), (height, width)], "normal": [(height, width, 3)]}[kind]
            if shape not in wanted:
                raise SourceError(f"{path}: {kind} of shape {shape}, expected {wanted[0]} (as the first image, "
                                  f"{height}x{width})")
            if not (np.issubdtype(dtype, np.floating) or np.issubdtype(dtype, np.integer)):
                raise SourceError(f"{path}: {kind} of dtype {dtype}, expected a number type")

    def split_counts(self) -> dict:
        return self.counts

    def _load(self, split: str, kind: str, position: int) -> np.ndarray:
        path = self.path(split, kind, position)
        try:
            return np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise SourceError(f"{path}: cannot read ({_first_line(exc)})") from None

    def get(self, split: str, position: int) -> Sample:
        self.check_position(split, position)
        image = self._image(split, position)
        labels = {"segmentation": self._segmentation(split, position), "depth": self._depth(split, position),
                  "normal": self._normal(split, position)}
        return Sample(self.index_offset(split) + position, image, labels, {t.name: True for t in self.tasks})

    def _image(self, split: str, position: int) -> np.ndarray:
        image = self._load(split, "image", position)
        if image.dtype == np.uint8:
            return image
        image = image.astype(np.float64)
        if not (np.isfinite(image).all() and image.min() >= 0.0 and image.max() <= 1.0):
            raise SourceError(f"{self.path(split, 'image', position)}: image values outside [0, 1]")
        return np.rint(image * 255.0).astype(np.uint8)

    def _segmentation(self, split: str, position: int) -> np.ndarray:
        label = self._load(split, "label", position)
        path = self.path(split, "label", position)
        if np.issubdtype(label.dtype, np.floating) and not (np.isfinite(label) & (np.round(label) == label)).all():
            raise SourceError(f"{path}: label holds values that are not whole class ids")
        label = label.astype(np.int64)
        bad = (label < -1) | (label >= NUM_CLASSES)
        if bad.any():
            raise SourceError(f"{path}: label {int(label[bad][0])} outside -1..{NUM_CLASSES - 1} (-1 = void)")
        return label

    def _depth(self, split: str, position: int) -> np.ndarray:
        depth = self._load(split, "depth", position).astype(np.float32).reshape(self.image_shape[:2] + (1,))
        if not (np.isfinite(depth).all() and depth.min() >= 0.0):
            raise SourceError(f"{self.path(split, 'depth', position)}: depth must be finite and >= 0 (0 = invalid)")
        return depth

    def _normal(self, split: str, position: int) -> np.ndarray:
        normal = self._load(split, "normal", position).astype(np.float32)
        if not (np.isfinite(normal).all() and np.abs(normal).max() <= 1.0 + 1e-3):
            raise SourceError(f"{self.path(split, 'normal', position)}: normal components must be finite and in [-1, 1]")
        return normal

    def sample_names(self) -> str:
        return "\n".join(f"{split}/{n}" for split in self.splits() for n in range(self.counts[split]))

    def digest_labels(self, digest, split: str) -> None:
        """The bytes of every label, depth and normal file of the split, in order (they survive a copy of
        the folder; reading them as arrays would hold gigabytes)."""
        for position in range(self.size(split)):
            for kind in KINDS[1:]:
                with open(self.path(split, kind, position), "rb") as handle:
                    digest.update(hashlib.sha256(handle.read()).digest())

    def image_digest(self) -> str:
        """Every image file's name, size and modification time (no pixel is read)."""
        digest = hashlib.sha256(repr((type(self).__name__, tuple(self.image_shape))).encode())
        for split in self.splits():
            for position in range(self.size(split)):
                status = os.stat(self.path(split, "image", position))
                digest.update(f"{split}/{position}\0{status.st_size}\0{status.st_mtime_ns}\n".encode())
        return digest.hexdigest()
