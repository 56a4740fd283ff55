"""Two-digit MultiMNIST-style composites of scikit-learn's bundled handwritten digits.

Each 32×32 grayscale image holds one digit on the left and one on the right (the 8×8,
0..16 scikit-learn digits, 2× upscaled to 16×16, jittered, overlaps combined with max),
after the MultiMNIST construction of Sabour et al. (2017) used by Sener & Koltun (2018).
"""

from __future__ import annotations

import functools
import importlib.util
import os

import numpy as np

from mtlue.data.base import Batch, GeneratedSource, TaskSpec
from mtlue.errors import SourceError

IMAGE_SIZE = 32
DIGIT_SIZE = 16  # 8×8 source digits upscaled 2×
TEST_POOL_FRACTION = 1 / 6  # share of the 1,797 source digits held out for test composites
LEFT_X = (0, 2)  # inclusive ranges of the top-left corner of each 16×16 digit
RIGHT_X = (14, 16)
Y_RANGE = (4, 12)
SPLIT_IDS = {"train": 0, "test": 1}

# none is flip-safe: a mirrored digit is no digit, and a flip swaps left and right
DIGITS_TASKS = (
    TaskSpec("left", "multiclass", 10),
    TaskSpec("right", "multiclass", 10),
    TaskSpec("sum_even", "binary", 2),
    TaskSpec("left_gt_right", "binary", 2),
)


def parse_options(source_name: str, arg: str | None, defaults: dict) -> dict:
    """Parse `key=int,key=int` spec options against the known keys and their defaults."""
    options = dict(defaults)
    if not arg:
        return options
    for item in arg.split(","):
        key, sep, value = item.strip().partition("=")
        if not sep or key not in defaults:
            known = ", ".join(f"{k}=INT" for k in defaults)
            raise SourceError(f"{source_name}: bad option {item!r} (options: {known})")
        try:
            options[key] = int(value)
        except ValueError:
            raise SourceError(f"{source_name}: option {key} needs an integer, got {value!r}") from None
    return options


@functools.lru_cache(maxsize=1)
def load_sklearn_digits() -> tuple[np.ndarray, np.ndarray]:
    """The 1,797 scikit-learn digits as uint8 (N,16,16) images in 0..255 and int64 labels."""
    spec = importlib.util.find_spec("sklearn")
    csv_path = os.path.join(os.path.dirname(spec.origin), "datasets", "data", "digits.csv.gz") if spec else ""
    if os.path.isfile(csv_path):
        # the same file load_digits() reads, without paying for importing sklearn.datasets
        table = np.loadtxt(csv_path, delimiter=",")
        pixels, targets = table[:, :64].reshape(-1, 8, 8), table[:, 64]
    else:
        from sklearn.datasets import load_digits

        bunch = load_digits()
        pixels, targets = bunch.images, bunch.target
    scaled = np.round(pixels * (255.0 / 16.0)).astype(np.uint8)
    upscaled = scaled.repeat(2, axis=1).repeat(2, axis=2)
    return upscaled, targets.astype(np.int64)


def composite_layout(pool: np.ndarray, count: int, rng: np.random.Generator) -> dict:
    """Draw which pool digits go left/right and where: arrays of length `count`."""
    return {
        "left": rng.choice(pool, size=count),
        "right": rng.choice(pool, size=count),
        "left_x": rng.integers(LEFT_X[0], LEFT_X[1] + 1, size=count),
        "right_x": rng.integers(RIGHT_X[0], RIGHT_X[1] + 1, size=count),
        "left_y": rng.integers(Y_RANGE[0], Y_RANGE[1] + 1, size=count),
        "right_y": rng.integers(Y_RANGE[0], Y_RANGE[1] + 1, size=count),
    }


def compose(digit_images: np.ndarray, digit_ids: dict, rows: np.ndarray) -> np.ndarray:
    """Paint the left and right digits of composites `rows` onto black (N,32,32,1) canvases (max blend)."""
    n = len(rows)
    canvas = np.zeros((n, IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
    offsets = np.arange(DIGIT_SIZE)
    sample_axis = np.arange(n)[:, None, None]
    for side in ("left", "right"):
        ys = digit_ids[f"{side}_y"][rows][:, None, None] + offsets[None, :, None]
        xs = digit_ids[f"{side}_x"][rows][:, None, None] + offsets[None, None, :]
        patch = digit_images[digit_ids[side][rows]]
        canvas[sample_axis, ys, xs] = np.maximum(canvas[sample_axis, ys, xs], patch)
    return canvas[..., None]


class DigitsSource(GeneratedSource):
    """Two-digit composites of the scikit-learn digits; test digits are disjoint from train digits."""

    name = "digits"
    generator_stem = "cifar"  # 32 px, CIFAR-sized
    tasks = DIGITS_TASKS
    image_shape = (IMAGE_SIZE, IMAGE_SIZE, 1)
    spec_help = "digits[:n_train=6000,n_test=1000,seed=0]"
    summary = (
        "scikit-learn handwritten digits (bundled, no download) composed two per 32x32 grayscale image; "
        "train/test composites use disjoint source-digit pools"
    )

    def __init__(self, n_train: int = 6000, n_test: int = 1000, seed: int = 0):
        if n_train < 1 or n_test < 1:
            raise SourceError(f"digits: n_train and n_test must be positive, got {n_train} and {n_test}")
        self.n_train, self.n_test, self.seed = int(n_train), int(n_test), int(seed)
        digit_images, digit_labels = load_sklearn_digits()
        permutation = np.random.default_rng(self.seed).permutation(len(digit_labels))
        n_test_pool = int(round(len(digit_labels) * TEST_POOL_FRACTION))
        self.digit_pools = {"train": np.sort(permutation[n_test_pool:]), "test": np.sort(permutation[:n_test_pool])}
        counts = {"train": self.n_train, "test": self.n_test}
        self.layouts = {
            split: composite_layout(self.digit_pools[split], counts[split],
                                    np.random.default_rng([self.seed, SPLIT_IDS[split]]))
            for split in ("train", "test")
        }
        self.digit_labels = digit_labels

    @classmethod
    def from_spec(cls, arg: str | None, seed: int | None = None) -> "DigitsSource":
        options = parse_options("digits", arg, {"n_train": 6000, "n_test": 1000, "seed": 0 if seed is None else seed})
        return cls(**options)

    @classmethod
    def task_help(cls) -> list:
        return [
            "left           multiclass 10  digit on the left half",
            "right          multiclass 10  digit on the right half",
            "sum_even       binary         (left + right) is even",
            "left_gt_right  binary         left digit > right digit",
        ]

    def split_counts(self) -> dict:
        return {"train": self.n_train, "test": self.n_test}

    def task_labels(self, split: str, rows: np.ndarray) -> dict:
        layout = self.layouts[split]
        left = self.digit_labels[layout["left"][rows]]
        right = self.digit_labels[layout["right"][rows]]
        return {
            "left": left,
            "right": right,
            "sum_even": ((left + right) % 2 == 0).astype(np.int64),
            "left_gt_right": (left > right).astype(np.int64),
        }

    def make_batch(self, split: str, rows: np.ndarray) -> Batch:
        digit_images, _ = load_sklearn_digits()
        images = compose(digit_images, self.layouts[split], rows)
        labels = self.task_labels(split, rows)
        masks = {t.name: np.ones(len(rows), dtype=bool) for t in self.tasks}
        return Batch(rows.astype(np.int64) + self.index_offset(split), images, labels, masks)

    def label_array(self, split: str, task: str) -> tuple[np.ndarray, np.ndarray]:
        self.check_split(split)
        self.task(task)
        labels = self.task_labels(split, np.arange(self.size(split)))[task]
        return labels, np.ones(len(labels), dtype=bool)
