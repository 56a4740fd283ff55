"""Write a `folder` dataset of natural photographs that no mtlue source uses, for the protection lab.

The photographs ship inside installed wheels (scikit-learn's china.jpg and flower.jpg, matplotlib's
grace_hopper.jpg, scikit-image's retina, hubble_deep_field, motorcycle_right), so nothing is downloaded.
Each image is a 32 px patch: a square crop of one photograph at one of three zooms (the crop side is 32,
64 or 96 px of the photograph resampled to 32). Train crops lie in the top 70% of each photograph's rows,
test crops in the bottom 30%, so no test pixel was seen in training.

Tasks (labels.csv, kinds in tasks.json):
- `scene` (multiclass, 6): which photograph;
- `zoom` (multiclass, 3): the crop side 32 / 64 / 96 px;
- `warm` (binary): the patch's mean red exceeds its mean blue (a property of the pixels, not of the draw);
- `detailed` (binary): the patch's mean absolute Laplacian is above the median of its photograph's.

    python bench/make_folder.py OUT [--train 6000] [--test 1200] [--seed 0]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys

import numpy as np
from PIL import Image

SIDE = 32
ZOOMS = (32, 64, 96)
TRAIN_ROWS = 0.7


def photographs() -> list:
    import matplotlib
    import skimage
    import sklearn

    roots = {"sklearn": os.path.join(os.path.dirname(sklearn.__file__), "datasets", "images"),
             "skimage": os.path.join(os.path.dirname(skimage.__file__), "data"),
             "matplotlib": os.path.join(os.path.dirname(matplotlib.__file__), "mpl-data", "sample_data")}
    files = [("china", "sklearn", "china.jpg"), ("flower", "sklearn", "flower.jpg"),
             ("hopper", "matplotlib", "grace_hopper.jpg"), ("retina", "skimage", "retina.jpg"),
             ("hubble", "skimage", "hubble_deep_field.jpg"), ("motorcycle", "skimage", "motorcycle_right.png")]
    out = []
    for name, root, file in files:
        with Image.open(os.path.join(roots[root], file)) as image:
            out.append((name, np.asarray(image.convert("RGB"), dtype=np.uint8)))
    return out


def laplacian_energy(patch: np.ndarray) -> float:
    gray = patch.astype(np.float32).mean(axis=2)
    lap = 4 * gray[1:-1, 1:-1] - gray[:-2, 1:-1] - gray[2:, 1:-1] - gray[1:-1, :-2] - gray[1:-1, 2:]
    return float(np.abs(lap).mean())


def draw(photo: np.ndarray, zoom: int, split: str, rng: np.random.Generator) -> np.ndarray:
    height, width, _ = photo.shape
    boundary = int(height * TRAIN_ROWS)
    top_low, top_high = (0, boundary - zoom) if split == "train" else (boundary, height - zoom)
    top = int(rng.integers(top_low, top_high + 1))
    left = int(rng.integers(0, width - zoom + 1))
    crop = Image.fromarray(photo[top:top + zoom, left:left + zoom])
    return np.asarray(crop.resize((SIDE, SIDE), Image.BICUBIC) if zoom != SIDE else crop, dtype=np.uint8)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    parser.add_argument("--train", type=int, default=6000)
    parser.add_argument("--test", type=int, default=1200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    photos = photographs()
    os.makedirs(os.path.join(args.out, "images"), exist_ok=False)
    rows = []
    for split, count in (("train", args.train), ("test", args.test)):
        rng = np.random.default_rng([args.seed, 0 if split == "train" else 1])
        patches = []
        for i in range(count):
            scene = int(rng.integers(len(photos)))
            zoom = int(rng.integers(len(ZOOMS)))
            patch = draw(photos[scene][1], ZOOMS[zoom], split, rng)
            patches.append((scene, zoom, patch))
        energies = {s: np.median([laplacian_energy(p) for sc, _, p in patches if sc == s]) for s in range(len(photos))}
        for i, (scene, zoom, patch) in enumerate(patches):
            name = f"images/{split}-{i:05d}.png"
            Image.fromarray(patch).save(os.path.join(args.out, name))
            warm = int(patch[..., 0].mean() > patch[..., 2].mean())
            detailed = int(laplacian_energy(patch) > energies[scene])
            rows.append({"file": name, "split": split, "scene": scene, "zoom": zoom, "warm": warm, "detailed": detailed})
    with open(os.path.join(args.out, "labels.csv"), "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["file", "split", "scene", "zoom", "warm", "detailed"])
        writer.writeheader()
        writer.writerows(rows)
    tasks = {"scene": {"kind": "multiclass", "num_classes": len(photos), "flip_safe": True},
             "zoom": {"kind": "multiclass", "num_classes": len(ZOOMS), "flip_safe": True},
             "warm": {"kind": "binary", "flip_safe": True}, "detailed": {"kind": "binary", "flip_safe": True}}
    with open(os.path.join(args.out, "tasks.json"), "w") as fh:
        json.dump(tasks, fh, indent=1)
    print(f"{args.out}: {args.train} train + {args.test} test images, tasks {', '.join(tasks)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
