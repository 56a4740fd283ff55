"""Procedural indoor scenes with dense labels: segmentation, depth and surface normals of one geometry.

Each sample is a ray-cast pinhole view (focal length = image side, so a 53° field of view; the camera
1.2–1.8 m high, pitched down 8–22° and turned up to 15° either way) of a room:
a checkered floor, a back wall, one side wall, a ceiling, and one to three boxes (yawed) and spheres
standing on the floor. Every pixel's label comes from the surface its ray hits first:
- `segmentation`: that surface's class (floor, wall, ceiling, box, sphere), −1 where a rectangle of
  the picture is left unlabelled (as NYUv2's void);
- `depth`: its z-depth in metres along the optical axis (as a Kinect measures), 0 in a "sensor hole";
- `normal`: its unit normal in the camera frame, x right, y up, z towards the viewer (right-handed,
  so a horizontal flip of the picture negates x), (0,0,0) in the sensor hole.
The image is that geometry shaded: albedo × (ambient + Lambert term of a light from above) dimmed with
distance, plus pixel noise. Class is carried by texture and colour (a checkered floor, plain pale
walls, a bright ceiling, saturated objects, boxes flat-shaded and spheres smoothly), depth by
perspective (checker size, the horizon, dimming) and normals by shading, so every task depends on the
picture. With `mixed=1` a classification task `objects` (how many objects: 1, 2 or 3) is added.

Sample `i` of a split is drawn from `np.random.default_rng([seed, split_id, i])`, as `shapes` does.
"""

from __future__ import annotations

import numpy as np

from mtlue.data.base import Batch, GeneratedSource, TaskSpec
from mtlue.data.digits import parse_options
from mtlue.errors import SourceError

CLASS_NAMES = ("floor", "wall", "ceiling", "box", "sphere")
FLOOR, WALL, CEILING, BOX, SPHERE = range(len(CLASS_NAMES))
SPLIT_IDS = {"train": 0, "test": 1}
MAX_OBJECTS = 3
OBJECT_COLOURS = np.array([[210, 50, 45], [40, 170, 70], [45, 80, 210], [225, 200, 40], [170, 60, 190],
                           [30, 180, 190]], dtype=np.float32)
CHECKER_METRES = 0.5
CEILING_HEIGHT = 2.8
AMBIENT = 0.35
DIMMING = 0.06  # brightness × 1 / (1 + DIMMING · depth)
PIXEL_NOISE = 8.0
CAMERA_YAW = 15.0  # degrees either way: the walls' normals and the horizon's slope vary with the view
FAR = 1e6  # "no hit"

# all flip-safe: a mirrored room is a room; normals need x negated on a flip (mtlue.data.dense.hflip_label)
DENSE_TASKS = (
    TaskSpec("segmentation", "segmentation", len(CLASS_NAMES), flip_safe=True),
    TaskSpec("depth", "depth", 1, flip_safe=True),
    TaskSpec("normal", "normal", 3, flip_safe=True),
)
OBJECTS_TASK = TaskSpec("objects", "multiclass", MAX_OBJECTS, flip_safe=True)


def draw_scene(seed: int, split_id: int, index: int) -> dict:
    """The parameters of one scene (camera, room, objects, lighting, holes) from its index-seeded stream."""
    rng = np.random.default_rng([seed, split_id, int(index)])
    scene = {
        "height": rng.uniform(1.2, 1.8), "pitch": np.deg2rad(rng.uniform(8.0, 22.0)),
        "yaw": np.deg2rad(rng.uniform(-CAMERA_YAW, CAMERA_YAW)),
        "wall_z": rng.uniform(4.5, 7.5), "side_x": rng.choice([-1.0, 1.0]) * rng.uniform(1.8, 3.0),
        "light_x": rng.uniform(-0.4, 0.4),
        "floor_rgb": np.array([150, 110, 70], np.float32) + rng.uniform(-25, 25, 3).astype(np.float32),
        "wall_rgb": np.array([175, 175, 185], np.float32) + rng.uniform(-20, 20, 3).astype(np.float32),
        "ceiling_rgb": np.array([235, 235, 230], np.float32) + rng.uniform(-10, 10, 3).astype(np.float32),
    }
    count = int(rng.integers(1, MAX_OBJECTS + 1))
    objects = np.zeros((MAX_OBJECTS, 9), np.float64)  # active, kind, x, z, radius, height, depth, yaw, colour
    for k in range(count):
        radius = rng.uniform(0.25, 0.55)
        # in view: a bearing within ±17° of the camera's heading, as far as the room allows (2 m and up)
        bearing = scene["yaw"] + rng.uniform(-0.3, 0.3)
        reach = (scene["wall_z"] - radius - 0.3) / np.cos(bearing)
        if np.sign(np.sin(bearing)) == np.sign(scene["side_x"]):
            reach = min(reach, (abs(scene["side_x"]) - radius - 0.05) / max(abs(np.sin(bearing)), 1e-6))
        distance = rng.uniform(min(2.0, reach), reach)
        x, z = distance * np.sin(bearing), distance * np.cos(bearing)
        objects[k] = (1.0, rng.integers(2), x, z, radius, radius * rng.uniform(0.7, 1.6),
                      radius * rng.uniform(0.7, 1.3), np.deg2rad(rng.uniform(-45, 45)), rng.integers(len(OBJECT_COLOURS)))
    scene["objects"], scene["count"] = objects, count
    # rectangles as (row, col, height, width) fractions of the side; a zero-size one is absent
    scene["void"] = _rectangle(rng, 0.5)
    scene["hole"] = _rectangle(rng, 0.5)
    return scene


def _rectangle(rng, probability: float) -> np.ndarray:
    size = rng.uniform(0.1, 0.25, 2)
    corner = rng.uniform(0.0, 1.0 - size)
    return np.concatenate([corner, size]) * (rng.random() < probability)


def _ray_directions(size: int, pitch: float, yaw: float) -> tuple[np.ndarray, np.ndarray]:
    """World-frame ray directions (S,S,3) with camera z = 1 (so t along them is z-depth), and the
    camera's rotation (3,3) world ← camera (pitched down by `pitch` about x, then turned by `yaw`
    about the vertical, towards +x)."""
    centres = (np.arange(size) + 0.5 - size / 2) / size
    x = np.broadcast_to(centres[None, :], (size, size))
    y = np.broadcast_to(-centres[:, None], (size, size))
    camera = np.stack([x, y, np.ones((size, size))], -1)
    c, s = np.cos(pitch), np.sin(pitch)
    cy, sy = np.cos(yaw), np.sin(yaw)
    rotation = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]]) @ np.array([[1, 0, 0], [0, c, -s], [0, s, c]])
    return camera @ rotation.T, rotation


def _plane(t_best, hit, direction, origin, axis: int, value: float, normal, cls: int, state) -> None:
    d = direction[..., axis]
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (value - origin[axis]) / d
    closer = np.isfinite(t) & (t > 1e-6) & (t < t_best)
    _take(closer, t, np.broadcast_to(np.asarray(normal, np.float64), direction.shape), cls, -1, t_best, hit, state)


def _take(closer, t, normal, cls, obj, t_best, hit, state) -> None:
    t_best[closer] = t[closer]
    state["normal"][closer] = normal[closer]
    state["cls"][closer] = cls
    state["obj"][closer] = obj
    hit |= closer


def _sphere(t_best, hit, direction, origin, centre, radius, obj, state) -> None:
    offset = origin - centre
    a = (direction * direction).sum(-1)
    b = 2.0 * (direction * offset).sum(-1)
    c = offset @ offset - radius * radius
    disc = b * b - 4 * a * c
    t = (-b - np.sqrt(np.maximum(disc, 0.0))) / (2 * a)
    closer = (disc >= 0) & (t > 1e-6) & (t < t_best)
    normal = (origin + t[..., None] * direction - centre) / radius
    _take(closer, t, normal, SPHERE, obj, t_best, hit, state)


def _box(t_best, hit, direction, origin, centre, half, yaw, obj, state) -> None:
    """Slab test in the box's frame (rotated by `yaw` about the vertical axis)."""
    c, s = np.cos(yaw), np.sin(yaw)
    to_local = np.array([[c, 0, -s], [0, 1, 0], [s, 0, c]])  # world → box frame
    d = direction @ to_local.T
    o = to_local @ (origin - centre)
    d = np.where(np.abs(d) < 1e-12, 1e-12, d)
    t1, t2 = (-half - o) / d, (half - o) / d
    near, far = np.minimum(t1, t2), np.maximum(t1, t2)
    t_in, t_out = near.max(-1), far.min(-1)
    closer = (t_in <= t_out) & (t_in > 1e-6) & (t_in < t_best)
    axis = near.argmax(-1)
    local = np.zeros(direction.shape)
    np.put_along_axis(local, axis[..., None], -np.sign(np.take_along_axis(d, axis[..., None], -1)), -1)
    _take(closer, t_in, local @ to_local, BOX, obj, t_best, hit, state)  # box frame → world: to_localᵀ


def render_scene(scene: dict, size: int, noise: np.ndarray) -> tuple:
    """(image uint8 (S,S,3), segmentation int64 (S,S), depth float32 (S,S,1), normal float32 (S,S,3))."""
    direction, rotation = _ray_directions(size, scene["pitch"], scene["yaw"])
    origin = np.array([0.0, scene["height"], 0.0])
    t_best, hit = np.full((size, size), FAR), np.zeros((size, size), bool)
    state = {"normal": np.zeros((size, size, 3)), "cls": np.zeros((size, size), np.int64),
             "obj": np.full((size, size), -1)}
    _plane(t_best, hit, direction, origin, 1, 0.0, (0, 1, 0), FLOOR, state)
    _plane(t_best, hit, direction, origin, 1, CEILING_HEIGHT, (0, -1, 0), CEILING, state)
    _plane(t_best, hit, direction, origin, 2, scene["wall_z"], (0, 0, -1), WALL, state)
    _plane(t_best, hit, direction, origin, 0, scene["side_x"], (-np.sign(scene["side_x"]), 0, 0), WALL, state)
    for k, (active, kind, x, z, radius, height, depth, yaw, _) in enumerate(scene["objects"]):
        if not active:
            continue
        if kind == 0:
            _box(t_best, hit, direction, origin, np.array([x, height, z]), np.array([radius, height, depth]), yaw, k, state)
        else:
            _sphere(t_best, hit, direction, origin, np.array([x, radius, z]), radius, k, state)

    world_normal, cls, t = state["normal"], state["cls"], t_best
    points = origin + t[..., None] * direction
    albedo = np.empty((size, size, 3), np.float64)
    checker = (np.floor(points[..., 0] / CHECKER_METRES) + np.floor(points[..., 2] / CHECKER_METRES)) % 2
    albedo[:] = scene["wall_rgb"]
    albedo[cls == FLOOR] = (scene["floor_rgb"] * (0.8 + 0.35 * checker[..., None]))[cls == FLOOR]
    albedo[cls == CEILING] = scene["ceiling_rgb"]
    objects = state["obj"] >= 0
    albedo[objects] = OBJECT_COLOURS[scene["objects"][state["obj"][objects], 8].astype(int)]
    light = np.array([scene["light_x"], 0.8, -0.6])
    light /= np.linalg.norm(light)
    lambert = np.clip(world_normal @ light, 0.0, None)
    brightness = (AMBIENT + (1 - AMBIENT) * lambert) / (1 + DIMMING * t)
    image = albedo * brightness[..., None] + noise[..., None]
    image = np.rint(np.clip(image, 0, 255)).astype(np.uint8)

    camera_normal = world_normal @ rotation  # camera ← world is rotationᵀ
    camera_normal[..., 2] *= -1  # z towards the viewer
    camera_normal /= np.linalg.norm(camera_normal, axis=-1, keepdims=True)
    segmentation = cls.copy()
    segmentation[_rectangle_mask(scene["void"], size)] = -1
    hole = _rectangle_mask(scene["hole"], size)
    depth = np.where(hole, 0.0, t)[..., None].astype(np.float32)
    normal = np.where(hole[..., None], 0.0, camera_normal).astype(np.float32)
    return image, segmentation, depth, normal


def _rectangle_mask(rectangle: np.ndarray, size: int) -> np.ndarray:
    top, left, height, width = (int(round(v * size)) for v in rectangle)
    mask = np.zeros((size, size), bool)
    mask[top:top + height, left:left + width] = True
    return mask


class ScenesSource(GeneratedSource):
    """Seeded ray-cast rooms: segmentation (5 classes), depth and normals of one geometry; any n, size."""

    name = "scenes"
    generator_stem = "cifar"  # 32-64 px
    spec_help = "scenes[:n=1000,size=32,seed=0,mixed=0]"
    summary = ("procedural rooms ray-cast per index: segmentation/depth/normal maps of one geometry (any count, "
               "square size a multiple of 8); mixed=1 adds the classification task objects; test split of "
               "max(100, n//5) scenes from a separate seed stream")

    def __init__(self, n: int = 1000, size: int = 32, seed: int = 0, mixed: int = 0):
        if n < 1:
            raise SourceError(f"scenes: n must be positive, got {n}")
        if size < 8 or size % 8:
            raise SourceError(f"scenes: size must be a multiple of 8 of at least 8 pixels, got {size}")
        if mixed not in (0, 1):
            raise SourceError(f"scenes: mixed must be 0 or 1, got {mixed}")
        self.n, self.image_size, self.seed, self.mixed = int(n), int(size), int(seed), int(mixed)
        self.image_shape = (self.image_size, self.image_size, 3)
        self.n_test = max(100, self.n // 5)
        self.tasks = DENSE_TASKS + ((OBJECTS_TASK,) if self.mixed else ())

    @classmethod
    def from_spec(cls, arg: str | None, seed: int | None = None) -> "ScenesSource":
        defaults = {"n": 1000, "size": 32, "seed": 0 if seed is None else seed, "mixed": 0}
        return cls(**parse_options("scenes", arg, defaults))

    @classmethod
    def task_help(cls) -> list:
        return [
            f"segmentation  segmentation {len(CLASS_NAMES)}  {'/'.join(CLASS_NAMES)}; -1 unlabelled",
            "depth         depth           z-depth in metres; 0 invalid (sensor hole)",
            "normal        normal          unit normal, camera frame (x right, y up, z to viewer); (0,0,0) invalid",
            f"objects       multiclass {MAX_OBJECTS}    (mixed=1 only) number of objects minus 1",
        ]

    def split_counts(self) -> dict:
        return {"train": self.n, "test": self.n_test}

    def make_batch(self, split: str, positions: np.ndarray) -> Batch:
        split_id, size = SPLIT_IDS[split], self.image_size
        images = np.empty((len(positions), size, size, 3), np.uint8)
        labels = {"segmentation": np.empty((len(positions), size, size), np.int64),
                  "depth": np.empty((len(positions), size, size, 1), np.float32),
                  "normal": np.empty((len(positions), size, size, 3), np.float32)}
        counts = np.empty(len(positions), np.int64)
        for row, position in enumerate(positions):
            scene = draw_scene(self.seed, split_id, int(position))
            noise_rng = np.random.default_rng([self.seed, split_id, int(position), 1])
            noise = (noise_rng.random((size, size)) * 2 - 1) * PIXEL_NOISE
            images[row], labels["segmentation"][row], labels["depth"][row], labels["normal"][row] = \
                render_scene(scene, size, noise)
            counts[row] = scene["count"] - 1
        if self.mixed:
            labels["objects"] = counts
        masks = {t.name: np.ones(len(positions), bool) for t in self.tasks}
        return Batch(np.asarray(positions, np.int64) + self.index_offset(split), images, labels, masks)
