"""UTKFace: age (9 bins), race (5) and gender (binary) parsed from `age_gender_race_date*.jpg` names.

Zhang, Song & Qi, "Age Progression/Regression by Conditional Adversarial Autoencoder" (CVPR 2017).
Images resized to 140×140 RGB; 80/20 train/test split by a seeded permutation of the sorted names.
"""

from __future__ import annotations

import os
import re

import numpy as np

from mtlue.data.base import TaskSpec
from mtlue.data.folder import ImageFileSource, require_root, seeded_split
from mtlue.errors import SourceError

IMAGE_SIZE = 140
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
AGE_BIN_EDGES = (3, 10, 20, 30, 40, 50, 60, 70)  # bins: <=2, 3-9, 10-19, ..., 60-69, >=70
AGE_BIN_NAMES = ("0-2", "3-9", "10-19", "20-29", "30-39", "40-49", "50-59", "60-69", "70+")
RACE_NAMES = ("White", "Black", "Asian", "Indian", "Others")
FULL_NAME = re.compile(r"^(\d+)_(\d+)_(\d+)_\d+")
# a handful of official files lack the race field ("39_1_20170116174525125.jpg.chip.jpg"): race is missing
NO_RACE_NAME = re.compile(r"^(\d+)_(\d+)_\d{9,}")

UTKFACE_TASKS = (
    TaskSpec("age", "multiclass", len(AGE_BIN_NAMES), flip_safe=True),
    TaskSpec("race", "multiclass", len(RACE_NAMES), flip_safe=True),
    TaskSpec("gender", "binary", 2, flip_safe=True),
)


def age_bins(ages: np.ndarray) -> np.ndarray:
    """Bin index of each age: <=2 → 0, 3-9 → 1, 10-19 → 2, ..., 60-69 → 7, >=70 → 8."""
    return np.searchsorted(AGE_BIN_EDGES, ages, side="right").astype(np.int64)


def parse_file_name(folder: str, name: str) -> tuple[int, int | None, int]:
    """(age, race or None when the name omits it, gender) from a UTKFace file name; bad names raise."""
    match = FULL_NAME.match(name)
    if match:
        age, gender, race = (int(g) for g in match.groups())
    else:
        match = NO_RACE_NAME.match(name)
        if not match:
            raise SourceError(f"{os.path.join(folder, name)}: name is not age_gender_race_date*.jpg")
        (age, gender), race = (int(g) for g in match.groups()), None
    if gender not in (0, 1):
        raise SourceError(f"{os.path.join(folder, name)}: task 'gender': label {gender} outside 0..1")
    if race is not None and not 0 <= race < len(RACE_NAMES):
        raise SourceError(f"{os.path.join(folder, name)}: task 'race': label {race} outside 0..{len(RACE_NAMES) - 1}")
    return age, race, gender


class UTKFaceSource(ImageFileSource):
    """UTKFace faces with age-bin, race and gender tasks; 80/20 seeded split; 140×140 RGB."""

    name = "utkface"
    generator_stem = "cifar"  # the reference UTKFace config: imagenet False (S = 70 at 140 px)
    spec_help = "utkface:PATH"
    summary = ("UTKFace images named age_gender_race_date*.jpg in PATH (or PATH/UTKFace/); "
               "80/20 split by seed over the sorted names; resized to 140x140 RGB")

    @classmethod
    def from_spec(cls, arg: str | None, seed: int | None = None) -> "UTKFaceSource":
        return cls.load(require_root("utkface", arg), seed=0 if seed is None else seed)

    @classmethod
    def task_help(cls) -> list:
        return [
            f"age     multiclass 9   bins {', '.join(AGE_BIN_NAMES)}",
            f"race    multiclass 5   {'/'.join(RACE_NAMES)}",
            "gender  binary         0 male, 1 female",
        ]

    @classmethod
    def load(cls, root: str, seed: int = 0) -> "UTKFaceSource":
        folder = root
        nested = os.path.join(root, "UTKFace")
        names = sorted(n for n in os.listdir(folder) if n.lower().endswith(IMAGE_EXTENSIONS))
        if not names and os.path.isdir(nested):
            folder = nested
            names = sorted(n for n in os.listdir(folder) if n.lower().endswith(IMAGE_EXTENSIONS))
        if not names:
            raise SourceError(f"utkface: no .jpg images in {root} (or {nested})")
        parsed = [parse_file_name(folder, name) for name in names]
        ages = np.asarray([age for age, _, _ in parsed])
        races = np.asarray([race if race is not None else 0 for _, race, _ in parsed], dtype=np.int64)
        labels = {
            "age": age_bins(ages),
            "race": races,
            "gender": np.asarray([gender for _, _, gender in parsed], dtype=np.int64),
        }
        masks = {
            "age": np.ones(len(names), dtype=bool),
            "race": np.asarray([race is not None for _, race, _ in parsed]),
            "gender": np.ones(len(names), dtype=bool),
        }
        return cls(folder, names, seeded_split(len(names), seed), UTKFACE_TASKS, labels, masks,
                   (IMAGE_SIZE, IMAGE_SIZE, 3))
