"""Training-time defenses against unlearnable examples, selectable by name.

`build_defense(name, tasks, generator=None)` returns the training hook
``defense(images, labels, masks, model) -> (images, [(weight, labels_dict), ...])`` or None for
``none``. Names: none, grayscale, jpeg<q> (e.g. jpeg10), bdr<bits> (e.g. bdr2), cutout, mixup,
cutmix, ueraser_lite, at. The image ops are also plain functions: `grayscale`, `jpeg`,
`bit_depth_reduction`, `cutout`, `mixup`, `cutmix`, `ueraser_lite`.
"""

from __future__ import annotations

import importlib
import re

from mtlue.errors import ConfigError

# name pattern -> one line for `--help`; adding a defense is one file and one entry here and in build_defense.
DEFENSES = {
    "none": "no defense (plain training)",
    "grayscale": "ITU-R BT.601 luma replicated to the image channels (ISS)",
    "jpeg<q>": "PIL JPEG round trip at quality q, 1..100, e.g. jpeg10 (ISS); 'jpeg' = jpeg10",
    "bdr<bits>": "bit-depth reduction to the top `bits` bits of each 8-bit pixel, 1..8, e.g. bdr2; 'bdr' = bdr2",
    "cutout": "zero one square per image, side half the shorter image side (16 px at 32 px)",
    "mixup": "mixup, one λ ~ Beta(1, 1) per batch, labels weighted λ / 1 − λ",
    "cutmix": "cutmix, one box per batch, labels weighted by pixel area",
    "ueraser_lite": "UEraser-lite kornia chain: plasma brightness/contrast, channel shuffle, affine, erasing",
    "at": "PGD adversarial training, ε 8/255, step 2/255, 10 steps, random start, objective total",
}

_ALIASES = {"jpeg": "jpeg10", "bdr": "bdr2", "ueraser-lite": "ueraser_lite", "ueraser": "ueraser_lite", "": "none"}

# function / module name -> module that defines it (imported on first use; keeps this package light)
_EXPORTS = {
    "grayscale": "squeezing", "jpeg": "squeezing", "bit_depth_reduction": "squeezing",
    "Grayscale": "squeezing", "JPEG": "squeezing", "BitDepthReduction": "squeezing",
    "cutout": "occlusion", "Cutout": "occlusion",
    "mixup": "mixing", "cutmix": "mixing", "MixUp": "mixing", "CutMix": "mixing",
    "ueraser_lite": "ueraser", "UEraserLite": "ueraser",
    "AdversarialTraining": "adversarial",
    "Defense": "base", "TransformDefense": "base",
}


def defense_help() -> str:
    """Valid names, one per line, for `--help` and error messages."""
    return "\n".join(f"{name:<13} {text}" for name, text in DEFENSES.items())


def _unknown(name: str, why: str = "unknown defense") -> ConfigError:
    return ConfigError(f"--defense {name!r}: {why} (valid: {', '.join(DEFENSES)})")


def canonical_defense_name(name: str | None) -> str:
    """The registry's spelling of a defense name: 'JPEG' -> 'jpeg10', None -> 'none'; ConfigError if unknown."""
    key = (name or "none").strip().lower()
    key = _ALIASES.get(key, key)
    if key in ("none", "grayscale", "cutout", "mixup", "cutmix", "ueraser_lite", "at"):
        return key
    match = re.fullmatch(r"(jpeg|bdr)(\d+)", key)
    if match is None:
        raise _unknown(name)
    kind, value = match.group(1), int(match.group(2))
    if kind == "jpeg" and not 1 <= value <= 100:
        raise _unknown(name, f"JPEG quality must be in 1..100, got {value}")
    if kind == "bdr" and not 1 <= value <= 8:
        raise _unknown(name, f"bit depth must be in 1..8, got {value}")
    return f"{kind}{value}"


def build_defense(name: str | None, tasks=None, generator=None):
    """The training hook for `name` (None for 'none'); `generator` seeds its random choices.

    `tasks` (TaskSpec tuple) is accepted for defenses that need the task list; the current ones
    work with any task kinds. Raises ConfigError naming the option and the valid names.
    """
    key = canonical_defense_name(name)
    if key == "none":
        return None
    from mtlue.defenses import base

    if key == "grayscale":
        from mtlue.defenses.squeezing import Grayscale

        return base.TransformDefense(key, Grayscale())
    if key.startswith("jpeg"):
        from mtlue.defenses.squeezing import JPEG

        return base.TransformDefense(key, JPEG(int(key[4:])))
    if key.startswith("bdr"):
        from mtlue.defenses.squeezing import BitDepthReduction

        return base.TransformDefense(key, BitDepthReduction(int(key[3:])))
    if key == "cutout":
        from mtlue.defenses.occlusion import Cutout

        return base.TransformDefense(key, Cutout(generator=generator))
    if key == "ueraser_lite":
        from mtlue.defenses.ueraser import UEraserLite

        return base.TransformDefense(key, UEraserLite(generator))
    if key == "mixup":
        from mtlue.defenses.mixing import MixUp

        return MixUp(generator=generator)
    if key == "cutmix":
        from mtlue.defenses.mixing import CutMix

        return CutMix(generator=generator)
    from mtlue.defenses.adversarial import AdversarialTraining

    return AdversarialTraining(generator=generator)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"mtlue.defenses.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'mtlue.defenses' has no attribute {name!r}")


__all__ = ["DEFENSES", "build_defense", "canonical_defense_name", "defense_help", *_EXPORTS]
