"""Attacker profiles: how the people a release must stop would train on it.

A profile is a backbone, an optimiser (Adam, or SGD with momentum and a cosine or step schedule),
an augmentation and a number of epochs, on top of the victim settings it is built from. Presets:

    plain      the settings as given (the MTL-UE victims: Adam, step schedule, no augmentation)
    augmented  plain + the standard augmentation (mtlue.augment)
    sgd        SGD, momentum 0.9 (Nesterov), lr 0.05, wd 5e-4, cosine schedule, standard augmentation
    long       plain with twice the epochs
    resnet18   the literature's attacker: torchvision ResNet-18 (ImageNet stem, which a CPU trains in
               minutes at 32 px), SGD momentum 0.9, lr 0.1, wd 5e-4, cosine, standard augmentation,
               at least 15 epochs

A recipe lists profiles as `[[victims.profiles]]` tables (`name`, optional `preset`, optional
`weightings`, and any victim setting such as `backbone`); `mtlue verify --profile` takes
`NAME[:key=value,…]`, weightings joined by `+` (`sgd:backbone=resnet8,weightings=ew+uw`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable, NamedTuple

from mtlue.errors import ConfigError
from mtlue.weighting import PAPER_WEIGHTINGS

STL_ROW = "stl"  # a weighting label: one independent network per task
PROFILE_KEYS = ("name", "preset", "weightings")


class Preset(NamedTuple):
    """An attacker profile preset: what it is, and the TrainConfig changes it makes to a base config."""

    description: str
    settings: Callable  # base TrainConfig -> {field: value}


# name -> Preset; adding a preset is one line here
PRESETS = {
    "plain": Preset("the victim settings as given", lambda base: {}),
    "augmented": Preset("plain + standard augmentation", lambda base: {"augment": "standard"}),
    "sgd": Preset("SGD momentum 0.9, lr 0.05, wd 5e-4, cosine, standard augmentation",
                  lambda base: {"optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4,
                                "schedule": "cosine", "augment": "standard"}),
    "long": Preset("plain with twice the epochs", lambda base: {"epochs": 2 * base.epochs}),
    "resnet18": Preset("torchvision ResNet-18 (ImageNet stem), SGD momentum 0.9, lr 0.1, wd 5e-4, cosine, standard "
                       "augmentation, at least 15 epochs",
                       lambda base: {"backbone": "resnet18_imagenet_stem", "optimizer": "sgd", "lr": 0.1,
                                     "momentum": 0.9, "weight_decay": 5e-4, "schedule": "cosine",
                                     "augment": "standard", "epochs": max(15, base.epochs)}),
}


def preset_settings(preset: str, base) -> dict:
    """TrainConfig changes a preset makes to `base` (a mtlue.train.TrainConfig)."""
    if preset not in PRESETS:
        raise ConfigError(f"attacker profile preset {preset!r}: one of {', '.join(PRESETS)}")
    return PRESETS[preset].settings(base)


@dataclass(frozen=True)
class AttackerProfile:
    """One attacker: a name, the victim TrainConfig (weighting set per row) and the weightings it runs."""

    name: str
    victim: object  # mtlue.train.TrainConfig
    weightings: tuple = PAPER_WEIGHTINGS

    def config_for(self, weighting: str, seed: int):
        if weighting == STL_ROW:
            return dataclasses.replace(self.victim, weighting="ew", stl=True, seed=seed)
        return dataclasses.replace(self.victim, weighting=weighting, stl=False, seed=seed)

    def row_label(self, weighting: str) -> str:
        """The weighting as a verdict row names it: a gradient weighting on representation gradients
        (not the exact shared-parameter ones) says so, `aligned_mtl~rep`."""
        if weighting == STL_ROW or self.victim.grad_space != "representation":
            return weighting
        from mtlue.weighting import weighting_class
        from mtlue.weighting.base import GradientWeighting

        return f"{weighting}~rep" if issubclass(weighting_class(weighting), GradientWeighting) else weighting

    def describe(self, tasks=(), image_shape=None) -> str:
        from mtlue.augment import describe_augmentation

        v = self.victim
        optimiser = f"{v.optimizer} lr {v.lr:g}" + (f" momentum {v.momentum:g}" if v.optimizer == "sgd" else "")
        schedule = "cosine" if v.schedule == "cosine" else f"step x{v.gamma:g} at epochs {v.milestone_epochs()}"
        augment = describe_augmentation(v.augment, tasks, image_shape) if image_shape is not None else v.augment
        return (f"{v.backbone}, {optimiser}, {schedule}, wd {v.weight_decay:g}, batch {v.batch_size}, "
                f"{v.epochs} epochs, augmentation: {augment}")

    def to_json(self) -> dict:
        return {"name": self.name, "weightings": list(self.weightings), "victim": dataclasses.asdict(self.victim)}


def check_weightings(names, where: str) -> tuple:
    from mtlue.weighting import WEIGHTINGS

    names = tuple(names)
    if not names:
        raise ConfigError(f"{where}: name at least one weighting")
    for name in names:
        if name != STL_ROW and name not in WEIGHTINGS:
            raise ConfigError(f"{where}: unknown weighting {name!r} (one of {', '.join(WEIGHTINGS)}, {STL_ROW})")
    return names


def build_profile(table: dict, base, default_weightings, where: str) -> AttackerProfile:
    """A profile from a recipe table or CLI spec: preset settings, then the table's own settings."""
    from mtlue.models.backbones import BACKBONES
    from mtlue.recipe import build_config

    table = dict(table)
    name = str(table.pop("name", "") or "").strip()
    if not name or any(c in name for c in "/\\: ,"):
        raise ConfigError(f"{where}: a profile needs a `name` without spaces, slashes, colons or commas, got {name!r}")
    preset = table.pop("preset", name if name in PRESETS else "plain")
    weightings = check_weightings(table.pop("weightings", default_weightings), f"{where} profile {name!r} weightings")
    settings = {**preset_settings(str(preset), base), **table}
    for key in ("weighting", "stl", "seed", "defense"):
        if key in settings:
            raise ConfigError(f"{where} profile {name!r}: {key!r} is set per victim row, not per profile")
    victim = build_config(type(base), {**dataclasses.asdict(base), **settings}, f"{where} profile {name!r}")
    if victim.backbone not in BACKBONES:
        raise ConfigError(f"{where} profile {name!r}: unknown backbone {victim.backbone!r} (one of {', '.join(BACKBONES)})")
    return AttackerProfile(name=name, victim=victim, weightings=weightings)


def build_profiles(tables, base, default_weightings, where: str) -> tuple:
    """Profiles from a list of tables; none given → one `plain` profile of `base`. Names must be unique."""
    tables = list(tables) or [{"name": "plain"}]
    profiles = tuple(build_profile(t, base, default_weightings, where) for t in tables)
    names = [p.name for p in profiles]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"{where}: profile name(s) {', '.join(duplicates)} used twice")
    return profiles


def parse_profile_spec(spec: str) -> dict:
    """`NAME[:key=value,…]` (CLI) → a profile table; values parse as int, float, then string."""
    name, _, rest = spec.partition(":")
    table = {"name": name.strip()}
    for item in filter(None, (part.strip() for part in rest.split(","))):
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--profile {spec!r}: {item!r} is not key=value")
        key, value = key.strip(), value.strip()
        table[key] = tuple(value.split("+")) if key == "weightings" else _parse_value(value)
    return table


def _parse_value(text: str):
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    return text
