"""Procedural multi-attribute shape images of any count and size, generated per index on the fly.

Sample `i` of a split is drawn from `np.random.default_rng([seed, split_id, i])`, so a source of a
million images costs no memory, builds in O(1) and any shard can be regenerated independently.
"""

from __future__ import annotations


import numpy as np

from mtlue.data.base import Batch, GeneratedSource, TaskSpec
from mtlue.data.digits import parse_options
from mtlue.errors import SourceError

SHAPE_NAMES = ("circle", "square", "triangle")
COLOUR_NAMES = ("red", "green", "blue", "yellow")
COLOUR_RGB = np.array([[220, 40, 40], [40, 200, 60], [50, 80, 230], [230, 210, 40]], dtype=np.float32)
QUADRANT_NAMES = ("top-left", "top-right", "bottom-left", "bottom-right")
SPLIT_IDS = {"train": 0, "test": 1}
SMALL_RADIUS = (0.10, 0.14)  # shape half-extent as a fraction of the image side
LARGE_RADIUS = (0.19, 0.23)
CENTRE_JITTER = 0.03
STRIPE_DARKEN = 0.45  # striped shapes alternate full colour and 45% of it
PIXEL_NOISE = 12.0

SHAPES_TASKS = (
    TaskSpec("shape", "multiclass", len(SHAPE_NAMES), flip_safe=True),  # circle, square, upward triangle
    TaskSpec("colour", "multiclass", len(COLOUR_NAMES), flip_safe=True),
    TaskSpec("large", "binary", 2, flip_safe=True),
    TaskSpec("quadrant", "multiclass", len(QUADRANT_NAMES)),  # a flip swaps left and right quadrants
    TaskSpec("striped", "binary", 2, flip_safe=True),
)
# columns of the per-sample parameter table
ATTRIBUTES = ("shape", "colour", "large", "quadrant", "striped")
NUM_UNIFORMS = 9  # radius, jitter x, jitter y, 3 colour tints, background, stripe phase, stripe angle


def draw_parameters(seed: int, split_id: int, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per sample: integer attributes (N,5) and uniforms (N,9), each from its own index-seeded stream."""
    attributes = np.empty((len(indices), len(ATTRIBUTES)), dtype=np.int64)
    uniforms = np.empty((len(indices), NUM_UNIFORMS), dtype=np.float64)
    highs = np.array([len(SHAPE_NAMES), len(COLOUR_NAMES), 2, len(QUADRANT_NAMES), 2])
    for row, index in enumerate(indices):
        rng = np.random.default_rng([seed, split_id, int(index)])
        draws = rng.random(len(ATTRIBUTES) + NUM_UNIFORMS)
        attributes[row] = (draws[: len(ATTRIBUTES)] * highs).astype(np.int64)
        uniforms[row] = draws[len(ATTRIBUTES):]
    return attributes, uniforms


def pixel_noise(seed: int, split_id: int, indices: np.ndarray, size: int) -> np.ndarray:
    """Per-sample pixel noise (N,size,size) in [-PIXEL_NOISE, PIXEL_NOISE] from a second index stream."""
    noise = np.empty((len(indices), size, size), dtype=np.float32)
    for row, index in enumerate(indices):
        rng = np.random.default_rng([seed, split_id, int(index), 1])
        noise[row] = rng.random((size, size), dtype=np.float32)
    return (noise * 2.0 - 1.0) * PIXEL_NOISE


def render(attributes: np.ndarray, uniforms: np.ndarray, noise: np.ndarray, size: int) -> np.ndarray:
    """Draw a batch of shapes as uint8 (N,size,size,3) images, all samples at once (float32 maths)."""
    shape, colour, large, quadrant, striped = (attributes[:, k] for k in range(len(ATTRIBUTES)))
    u = uniforms.astype(np.float32)
    low = np.where(large == 1, LARGE_RADIUS[0], SMALL_RADIUS[0]).astype(np.float32)
    high = np.where(large == 1, LARGE_RADIUS[1], SMALL_RADIUS[1]).astype(np.float32)
    radius = (low + (high - low) * u[:, 0])[:, None, None]
    centre_x = (0.25 + 0.5 * (quadrant % 2) + CENTRE_JITTER * (2 * u[:, 1] - 1)).astype(np.float32)
    centre_y = (0.25 + 0.5 * (quadrant // 2) + CENTRE_JITTER * (2 * u[:, 2] - 1)).astype(np.float32)

    grid = (np.arange(size, dtype=np.float32) + 0.5) / size
    dx = grid[None, None, :] - centre_x[:, None, None]  # (N,1,W)
    dy = grid[None, :, None] - centre_y[:, None, None]  # (N,H,1)
    inside = np.zeros((len(shape), size, size), dtype=bool)
    for k, draw_mask in enumerate((circle_mask, square_mask, triangle_mask)):
        chosen = np.flatnonzero(shape == k)
        if len(chosen):
            inside[chosen] = draw_mask(dx[chosen], dy[chosen], radius[chosen])

    # stripes: alternate bands of width period/2 across a random direction, random phase
    period = max(4.0, size / 8.0) / size
    angle = u[:, 8] * np.float32(np.pi)
    along = (np.cos(angle)[:, None, None] * dx + np.sin(angle)[:, None, None] * dy
             + (u[:, 7] * period + 2.0)[:, None, None])  # +2 keeps it positive for the integer cast
    dark_stripe = ((along * np.float32(2.0 / period)).astype(np.int32) & 1).astype(bool)
    dark_stripe &= (striped == 1)[:, None, None]
    shade = np.where(dark_stripe, np.float32(STRIPE_DARKEN), np.float32(1.0)) * inside

    tint = COLOUR_RGB[colour] + (u[:, 3:6] - 0.5) * np.float32(40.0)  # (N,3)
    background = np.float32(20.0) + np.float32(60.0) * u[:, 6]
    image = shade[..., None] * tint[:, None, None, :]
    image += ((~inside) * background[:, None, None] + noise)[..., None]
    np.clip(image, 0, 255, out=image)
    return np.rint(image).astype(np.uint8)


def circle_mask(dx: np.ndarray, dy: np.ndarray, radius: np.ndarray) -> np.ndarray:
    return dx * dx + dy * dy <= radius * radius


def square_mask(dx: np.ndarray, dy: np.ndarray, radius: np.ndarray) -> np.ndarray:
    half = radius * np.float32(0.886)  # same area as the circle of that radius
    return (np.abs(dx) <= half) & (np.abs(dy) <= half)


def triangle_mask(dx: np.ndarray, dy: np.ndarray, radius: np.ndarray) -> np.ndarray:
    """Upward triangle: apex at (cx, cy - r), base at y = cy + r with half-width 1.15 r."""
    depth = (dy + radius) / (2 * radius)
    return (depth >= 0) & (depth <= 1) & (np.abs(dx) <= depth * np.float32(1.15) * radius)


class ShapesSource(GeneratedSource):
    """Seeded procedural shapes: shape, colour, size, quadrant and texture tasks; any n and size."""

    name = "shapes"
    generator_stem = "cifar"  # 32 px by default; CIFAR-style at any size (the reference keeps it to 140 px)
    tasks = SHAPES_TASKS
    spec_help = "shapes[:n=2000,size=32,seed=0]"
    summary = (
        "procedural RGB shapes generated per index (any count and size, O(1) memory); "
        "test split of max(200, n//5) images from a separate seed stream"
    )

    def __init__(self, n: int = 2000, size: int = 32, seed: int = 0):
        if n < 1:
            raise SourceError(f"shapes: n must be positive, got {n}")
        if size < 8:
            raise SourceError(f"shapes: size must be at least 8 pixels, got {size}")
        self.n, self.image_size, self.seed = int(n), int(size), int(seed)
        self.image_shape = (self.image_size, self.image_size, 3)
        self.n_test = max(200, self.n // 5)

    @classmethod
    def from_spec(cls, arg: str | None, seed: int | None = None) -> "ShapesSource":
        options = parse_options("shapes", arg, {"n": 2000, "size": 32, "seed": 0 if seed is None else seed})
        return cls(**options)

    @classmethod
    def task_help(cls) -> list:
        return [
            f"shape     multiclass {len(SHAPE_NAMES)}   {'/'.join(SHAPE_NAMES)}",
            f"colour    multiclass {len(COLOUR_NAMES)}   {'/'.join(COLOUR_NAMES)}",
            "large     binary         large (1) or small (0) shape",
            f"quadrant  multiclass {len(QUADRANT_NAMES)}   {'/'.join(QUADRANT_NAMES)}",
            "striped   binary         striped (1) or plain (0) fill",
        ]

    def split_counts(self) -> dict:
        return {"train": self.n, "test": self.n_test}

    def make_batch(self, split: str, positions: np.ndarray) -> Batch:
        split_id = SPLIT_IDS[split]
        attributes, uniforms = draw_parameters(self.seed, split_id, positions)
        noise = pixel_noise(self.seed, split_id, positions, self.image_size)
        images = render(attributes, uniforms, noise, self.image_size)
        labels = {name: attributes[:, k].copy() for k, name in enumerate(ATTRIBUTES)}
        masks = {name: np.ones(len(positions), dtype=bool) for name in ATTRIBUTES}
        return Batch(positions.astype(np.int64) + self.index_offset(split), images, labels, masks)

    def label_array(self, split: str, task: str) -> tuple[np.ndarray, np.ndarray]:
        """Labels need only the attribute draws, not the rendered images."""
        self.check_split(split)
        column = ATTRIBUTES.index(self.task(task).name)
        labels = np.concatenate([
            draw_parameters(self.seed, SPLIT_IDS[split], np.arange(lo, min(lo + 4096, self.size(split))))[0][:, column]
            for lo in range(0, self.size(split), 4096)
        ])
        return labels, np.ones(len(labels), dtype=bool)
