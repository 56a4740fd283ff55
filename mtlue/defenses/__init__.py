"""Training-time defenses against unlearnable examples, selectable by name.

`build_defense(name, tasks, generator=None)` returns the training hook
``defense(images, labels, masks, model) -> (images, [(weight, labels_dict), ...])`` or None for
``none``. The victims train through these hooks and the robust generator (`mtlue protect --robust`)
trains through the same ones. Each defense's file also holds its plain function and nn.Module
(`grayscale`/`Grayscale`, `jpeg`/`JPEG`, `jpeg_differentiable`/`DifferentiableJPEG`,
`bit_depth_reduction`/`BitDepthReduction`, `cutout`/`Cutout`, `mixup`/`MixUp`, `cutmix`/`CutMix`,
`ueraser_lite`/`UEraserLite`, `AdversarialTraining`), importable from this package on first use.
"""

from __future__ import annotations

import importlib
import re
from typing import NamedTuple

from mtlue.errors import ConfigError


class Entry(NamedTuple):
    """One registered defense: `factory` ("module:callable" in mtlue.defenses, None for no defense) builds
    the hook as ``factory(generator=...)``, or ``factory(value, generator=...)`` when the name carries a
    number (`parameter` = (low, high, default, what it is), e.g. jpeg<q>); `aliases` are other spellings;
    `not_dense` says why the defense cannot train tasks with dense label maps (None: it can)."""

    factory: str | None
    help: str
    parameter: tuple | None = None
    aliases: tuple = ()
    not_dense: str | None = None


# name (pattern) -> Entry. Adding a defense is one file in this package and one line here.
DEFENSES = {
    "none": Entry(None, "no defense (plain training)", aliases=("",)),
    "grayscale": Entry("squeezing:grayscale_defense", "ITU-R BT.601 luma replicated to the image channels (ISS)"),
    "jpeg<q>": Entry("squeezing:jpeg_defense", "PIL JPEG round trip at quality q, 1..100, e.g. jpeg10 (ISS); "
                     "'jpeg' = jpeg10", (1, 100, 10, "JPEG quality")),
    "bdr<bits>": Entry("squeezing:bdr_defense", "bit-depth reduction to the top `bits` bits of each 8-bit pixel, "
                       "1..8, e.g. bdr2; 'bdr' = bdr2", (1, 8, 2, "bit depth")),
    "cutout": Entry("occlusion:cutout_defense", "zero one square per image, side half the shorter image side "
                    "(16 px at 32 px)"),
    "mixup": Entry("mixing:MixUp", "mixup, one λ ~ Beta(1, 1) per batch, labels weighted λ / 1 − λ"),
    "cutmix": Entry("mixing:CutMix", "cutmix, one box per batch, labels weighted by pixel area (dense label maps "
                    "pasted with the box)"),
    "ueraser_lite": Entry("ueraser:ueraser_lite_defense", "UEraser-lite kornia chain: plasma brightness/contrast, "
                          "channel shuffle, affine, erasing (image-level tasks only)", aliases=("ueraser-lite", "ueraser"),
                          not_dense="its random affine moves the image but not the dense label maps"),
    "at": Entry("adversarial:AdversarialTraining", "PGD adversarial training, ε 8/255, step 2/255, 10 steps, "
                "random start, objective total"),
}


def defense_help() -> str:
    """Valid names, one per line, for `--help` and error messages."""
    return "\n".join(f"{name:<13} {entry.help}" for name, entry in DEFENSES.items())


def defense_names() -> str:
    """'none, grayscale, jpeg<q> (e.g. jpeg10), ...': the registry's names for a one-line `--help`."""
    return ", ".join(pattern if entry.parameter is None else f"{pattern} (e.g. {_stem(pattern)}{entry.parameter[2]})"
                     for pattern, entry in DEFENSES.items())


def standard_defenses() -> tuple:
    """Every registered defense but none, a number-carrying one at its default: the defense grid of a
    complete verification (grayscale, jpeg10, bdr2, cutout, ...)."""
    return tuple(pattern if entry.parameter is None else f"{_stem(pattern)}{entry.parameter[2]}"
                 for pattern, entry in DEFENSES.items() if entry.factory is not None)


def _unknown(name: str, why: str = "unknown defense") -> ConfigError:
    return ConfigError(f"--defense {name!r}: {why} (valid: {', '.join(DEFENSES)})")


def _stem(pattern: str) -> str:
    return pattern.split("<")[0]


def _lookup(name: str | None) -> tuple[str, Entry, int | None]:
    """(canonical name, its Entry, its number or None); ConfigError naming the valid names if unknown."""
    key = (name or "none").strip().lower()
    for pattern, entry in DEFENSES.items():
        if entry.parameter is None:
            if key == pattern or key in entry.aliases:
                return pattern, entry, None
            continue
        low, high, default, what = entry.parameter
        stem = _stem(pattern)
        if key == stem or key in entry.aliases:
            return f"{stem}{default}", entry, default
        match = re.fullmatch(rf"{re.escape(stem)}(\d+)", key)
        if match:
            value = int(match.group(1))
            if not low <= value <= high:
                raise _unknown(name, f"{what} must be in {low}..{high}, got {value}")
            return f"{stem}{value}", entry, value
    raise _unknown(name)


def canonical_defense_name(name: str | None) -> str:
    """The registry's spelling of a defense name: 'JPEG' -> 'jpeg10', None -> 'none'; ConfigError if unknown."""
    return _lookup(name)[0]


def check_defense_for(name: str | None, tasks) -> None:
    """ConfigError when defense `name` is unknown or cannot train these tasks (TaskSpecs)."""
    key, entry, _ = _lookup(name)
    dense = [t for t in tasks if t.is_dense]
    if dense and entry.not_dense:
        raise ConfigError(f"--defense {key}: {entry.not_dense} of task {dense[0].name!r} ({dense[0].kind}); "
                          "use a defense that keeps label maps aligned for dense tasks")


def build_defense(name: str | None, tasks=None, generator=None):
    """The training hook for `name` (None for 'none'); `generator` seeds its random choices.

    `tasks` (TaskSpec tuple) lets a defense that cannot train dense tasks refuse them. Raises
    ConfigError naming the option and the valid names, or the defense and the dense task it cannot train.
    """
    check_defense_for(name, tasks or ())
    _, entry, value = _lookup(name)
    if entry.factory is None:
        return None
    module_name, attribute = entry.factory.split(":")
    factory = getattr(importlib.import_module(f"mtlue.defenses.{module_name}"), attribute)
    return factory(generator=generator) if value is None else factory(value, generator=generator)


def _modules() -> list[str]:
    """The package's modules that define defenses (every registered one, then the shared base)."""
    return list(dict.fromkeys([e.factory.split(":")[0] for e in DEFENSES.values() if e.factory] + ["base"]))


def __getattr__(name):
    if not name.startswith("_"):
        for module_name in _modules():
            module = importlib.import_module(f"mtlue.defenses.{module_name}")
            if name in getattr(module, "__all__", ()):
                return getattr(module, name)
    raise AttributeError(f"module 'mtlue.defenses' has no attribute {name!r}")


__all__ = ["DEFENSES", "Entry", "build_defense", "canonical_defense_name", "check_defense_for", "defense_help", "defense_names",
           "standard_defenses"]
