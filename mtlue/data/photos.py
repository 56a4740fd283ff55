"""Square patches of scikit-image's bundled photographs, with four tasks a model must read them for.

The eight photographs ship inside the scikit-image wheel (`skimage/data/`), so nothing is downloaded;
images pooch would fetch are never used. Each is resampled once so that its shorter side is
`WORKING_SIDE_UNITS × size` pixels (bicubic; 320 px at the default size 32, which downsamples all but
chelsea's 300 px). A patch is a square crop of one photograph: `size` pixels at the working scale, or
`2 × size` pixels averaged 2×2 down to `size` ("zoomed out"), then turned upright, sideways (90° either
way) or upside down.

Split rule: train crops lie wholly in the left three quarters of each photograph's columns, test crops
wholly in the right quarter, so no test pixel was ever seen in training and a victim has to generalise.
Sample `i` of a split is drawn from `np.random.default_rng([seed, split_id, i])`: any count, the same
bytes for the same (seed, split, position).
"""

from __future__ import annotations

import functools
import importlib.util
import os

import numpy as np

from mtlue.data.base import Batch, GeneratedSource, TaskSpec
from mtlue.data.digits import parse_options
from mtlue.errors import SourceError

# (class name, file in skimage/data/); all are shipped in the wheel (scikit-image's "legacy" data)
PHOTOGRAPHS = (
    ("astronaut", "astronaut.png"),
    ("brick", "brick.png"),
    ("camera", "camera.png"),
    ("chelsea", "chelsea.png"),
    ("coffee", "coffee.png"),
    ("ihc", "ihc.png"),
    ("motorcycle", "motorcycle_left.png"),
    ("rocket", "rocket.jpg"),
)
PHOTO_NAMES = tuple(name for name, _ in PHOTOGRAPHS)
ORIENTATION_NAMES = ("upright", "sideways", "upside_down")
ORIENTATION_TURNS = ((0,), (1, 3), (2,))  # quarter turns counter-clockwise (np.rot90 k) per class
WORKING_SIDE_UNITS = 10  # shorter side of a resampled photograph, in patch sides
TRAIN_COLUMNS = 0.75  # train crops from the left 75% of columns, test crops from the rest
SPLIT_IDS = {"train": 0, "test": 1}
LUMA_WEIGHTS = np.array([299, 587, 114], dtype=np.int64)  # ITU-R BT.601, integer so ties are exact

PHOTOS_TASKS = (
    # all flip-safe: a horizontal flip keeps the photograph, keeps upright/sideways/upside-down (a
    # sideways patch stays sideways), keeps the zoom and keeps which half is on top
    TaskSpec("photo", "multiclass", len(PHOTO_NAMES), flip_safe=True),
    TaskSpec("orientation", "multiclass", len(ORIENTATION_NAMES), flip_safe=True),
    TaskSpec("zoomed_out", "binary", 2, flip_safe=True),
    TaskSpec("top_brighter", "binary", 2, flip_safe=True),
)
# Every label survives a horizontal flip: a mirrored patch comes from the same photograph at the same
# scale; mirroring leaves the top and bottom halves in place; and it maps upright to upright, upside
# down to upside down (flip·rot180 = rot180·flip) and a 90° turn to a 270° turn of the mirrored patch
# (flip·rot90 = rot270·flip), both "sideways", which is why orientation has three classes, not four.
FLIP_SAFE_TASKS = ("photo", "orientation", "zoomed_out", "top_brighter")
# per-sample draws: photo, orientation, sideways direction, zoom, then (x, y) for each crop try
CROP_TRIES = 8
MIN_LUMA_STD = 6.0


def photograph_dir() -> str:
    """scikit-image's bundled data folder, found without importing scikit-image."""
    spec = importlib.util.find_spec("skimage")
    if spec is None or spec.origin is None:
        raise SourceError("photos: needs scikit-image, whose wheel ships the photographs (pip install 'mtlue[photos]')")
    return os.path.join(os.path.dirname(spec.origin), "data")


@functools.lru_cache(maxsize=2)
def working_photographs(size: int) -> tuple:
    """The photographs as read-only uint8 (H, W, 3) arrays whose shorter side is WORKING_SIDE_UNITS × size."""
    from PIL import Image

    folder = photograph_dir()
    photographs = []
    for name, file_name in PHOTOGRAPHS:
        path = os.path.join(folder, file_name)
        if not os.path.isfile(path):
            raise SourceError(f"photos: photograph {name!r} is not in the installed scikit-image ({path} missing); "
                              "it must ship with the package, it is never downloaded")
        try:
            with Image.open(path) as opened:
                image = opened.convert("RGB")
        except (OSError, ValueError, SyntaxError) as error:
            raise SourceError(f"{path}: unreadable photograph ({error})") from None
        width, height = image.size
        scale = WORKING_SIDE_UNITS * size / min(width, height)
        target = (max(1, round(width * scale)), max(1, round(height * scale)))
        array = np.asarray(image.resize(target, Image.BICUBIC), dtype=np.uint8).copy()
        array.setflags(write=False)
        photographs.append(array)
    return tuple(photographs)


def split_columns(width: int, split: str) -> tuple[int, int]:
    """The half-open column range [lo, hi) that crops of `split` must lie in."""
    boundary = int(round(width * TRAIN_COLUMNS))
    return (0, boundary) if split == "train" else (boundary, width)


def draw_crops(seed: int, split: str, positions: np.ndarray, size: int, photographs: tuple) -> tuple[dict, np.ndarray]:
    """Per sample: photo, orientation, quarter turns, zoomed_out and the source square (y, x, side), and
    the unrotated (N, size, size, 3) patches cut from those squares.

    The crop position is tried up to CROP_TRIES times from the sample's own stream and the first whose
    patch has a luma standard deviation of at least MIN_LUMA_STD is kept (the last try otherwise), so
    flat sky or background carries no labels that nothing in the pixels could predict.
    """
    n = len(positions)
    uniforms = np.empty((n, 4 + 2 * CROP_TRIES), dtype=np.float64)
    for row, position in enumerate(positions):
        uniforms[row] = np.random.default_rng([seed, SPLIT_IDS[split], int(position)]).random(uniforms.shape[1])
    photo = (uniforms[:, 0] * len(PHOTO_NAMES)).astype(np.int64)
    orientation = (uniforms[:, 1] * len(ORIENTATION_NAMES)).astype(np.int64)
    turns = np.where(orientation == 1, np.where(uniforms[:, 2] < 0.5, 1, 3), orientation).astype(np.int64)
    zoomed_out = (uniforms[:, 3] < 0.5).astype(np.int64)
    side = size * (1 + zoomed_out)

    heights = np.array([p.shape[0] for p in photographs], dtype=np.int64)[photo]
    columns = np.array([split_columns(p.shape[1], split) for p in photographs], dtype=np.int64).reshape(-1, 2)[photo]
    x_span = columns[:, 1] - columns[:, 0] - side + 1
    y_span = heights - side + 1
    if n and (x_span.min() < 1 or y_span.min() < 1):
        raise SourceError(f"photos {split}: a {side.max()} px crop does not fit its photograph region")
    tries_x = columns[:, :1] + (uniforms[:, 4::2] * x_span[:, None]).astype(np.int64)  # (N, CROP_TRIES)
    tries_y = (uniforms[:, 5::2] * y_span[:, None]).astype(np.int64)

    crops = {"photo": photo, "orientation": orientation, "turns": turns, "zoomed_out": zoomed_out,
             "y": tries_y[:, 0].copy(), "x": tries_x[:, 0].copy(), "side": side}
    squares = cut_squares(photographs, crops, np.arange(n), size)
    pending = np.arange(n)
    for attempt in range(1, CROP_TRIES):
        pending = pending[luma_std(squares[pending]) < MIN_LUMA_STD]
        if not len(pending):
            break
        crops["y"][pending], crops["x"][pending] = tries_y[pending, attempt], tries_x[pending, attempt]
        squares[pending] = cut_squares(photographs, crops, pending, size)
    return crops, squares


def cut_squares(photographs: tuple, crops: dict, rows: np.ndarray, size: int) -> np.ndarray:
    """Unrotated uint8 (len(rows), size, size, 3) patches: crop, then an exact 2×2 mean if zoomed out."""
    squares = np.empty((len(rows), size, size, 3), dtype=np.uint8)
    zoomed = np.flatnonzero(crops["zoomed_out"][rows] == 1)
    wide = np.empty((len(zoomed), 2 * size, 2 * size, 3), dtype=np.uint16)
    slot = np.full(len(rows), -1)
    slot[zoomed] = np.arange(len(zoomed))
    for at, row in enumerate(rows):
        y, x, side = int(crops["y"][row]), int(crops["x"][row]), int(crops["side"][row])
        square = photographs[crops["photo"][row]][y:y + side, x:x + side]
        if slot[at] >= 0:
            wide[slot[at]] = square
        else:
            squares[at] = square
    # integer 2×2 sums with round-half-up: the same bytes on any platform
    summed = wide[:, 0::2, 0::2] + wide[:, 1::2, 0::2] + wide[:, 0::2, 1::2] + wide[:, 1::2, 1::2]
    squares[zoomed] = (summed + 2) // 4
    return squares


def turn_patches(squares: np.ndarray, turns: np.ndarray) -> np.ndarray:
    """Each square turned `turns` quarter turns counter-clockwise (np.rot90), in place."""
    for quarter_turns in (1, 2, 3):
        chosen = np.flatnonzero(turns == quarter_turns)
        squares[chosen] = np.rot90(squares[chosen], quarter_turns, axes=(1, 2))
    return squares


def luma_std(patches: np.ndarray) -> np.ndarray:
    """Standard deviation of each patch's BT.601 luma, in 0..255 units."""
    luma = patches.astype(np.float64) @ (LUMA_WEIGHTS / 1000.0)
    return luma.reshape(len(patches), -1).std(axis=1)


def top_brighter(patches: np.ndarray) -> np.ndarray:
    """1 where the top half of a patch has more total luma than its bottom half (middle row of odd sizes ignored)."""
    half = patches.shape[1] // 2
    luma = patches.astype(np.int64) @ LUMA_WEIGHTS  # (N, H, W)
    return (luma[:, :half].sum(axis=(1, 2)) > luma[:, -half:].sum(axis=(1, 2))).astype(np.int64)


class PhotosSource(GeneratedSource):
    """Patches of eight bundled photographs: photo, orientation, zoom and top-brightness tasks; any n and size."""

    name = "photos"
    generator_stem = "cifar"  # 32 px by default; CIFAR-style at any size (the reference keeps it to 140 px)
    tasks = PHOTOS_TASKS
    spec_help = "photos[:n=6000,size=32,seed=0]"
    summary = (
        "square RGB patches of 8 photographs bundled with scikit-image (no download), generated per index; "
        "train crops from the left 3/4 of each photograph, test crops (max(200, n//5)) from the right 1/4"
    )

    def __init__(self, n: int = 6000, size: int = 32, seed: int = 0):
        if n < 1:
            raise SourceError(f"photos: n must be positive, got {n}")
        if size < 8:
            raise SourceError(f"photos: size must be at least 8 pixels, got {size}")
        self.n, self.image_size, self.seed = int(n), int(size), int(seed)
        self.image_shape = (self.image_size, self.image_size, 3)
        self.n_test = max(200, self.n // 5)

    @classmethod
    def from_spec(cls, arg: str | None, seed: int | None = None) -> "PhotosSource":
        options = parse_options("photos", arg, {"n": 6000, "size": 32, "seed": 0 if seed is None else seed})
        return cls(**options)

    @classmethod
    def task_help(cls) -> list:
        return [
            f"photo         multiclass {len(PHOTO_NAMES)}   source photograph: {'/'.join(PHOTO_NAMES)}",
            f"orientation   multiclass {len(ORIENTATION_NAMES)}   {'/'.join(ORIENTATION_NAMES)} "
            "(patch turned 0°, ±90° or 180°)",
            "zoomed_out    binary         crop of 2×size px averaged down (1) or of size px (0)",
            "top_brighter  binary         top half brighter than bottom half, as shown",
            "all four survive a horizontal flip",
        ]

    def split_counts(self) -> dict:
        return {"train": self.n, "test": self.n_test}

    def crops(self, split: str, positions: np.ndarray) -> tuple[dict, np.ndarray]:
        """Where each sample of `split` at `positions` is cut from, and its unrotated patch (see `draw_crops`)."""
        self.check_split(split)
        return draw_crops(self.seed, split, np.asarray(positions), self.image_size,
                          working_photographs(self.image_size))

    def make_batch(self, split: str, positions: np.ndarray) -> Batch:
        crops, squares = self.crops(split, positions)
        images = turn_patches(squares, crops["turns"])
        labels = {
            "photo": crops["photo"],
            "orientation": crops["orientation"],
            "zoomed_out": crops["zoomed_out"],
            "top_brighter": top_brighter(images),
        }
        masks = {t.name: np.ones(len(positions), dtype=bool) for t in self.tasks}
        return Batch(np.asarray(positions, dtype=np.int64) + self.index_offset(split), images, labels, masks)

    def label_array(self, split: str, task: str) -> tuple[np.ndarray, np.ndarray]:
        """All four label columns of a split are built in one pass and kept: top_brighter needs the pixels."""
        self.check_split(split)
        self.task(task)
        cache = self.__dict__.setdefault("_labels", {})
        if split not in cache:
            parts = [batch.labels for batch in self.batches(split, 1024)]
            cache[split] = {t.name: np.concatenate([p[t.name] for p in parts]) for t in self.tasks}
        labels = cache[split][task]
        return labels, np.ones(len(labels), dtype=bool)
