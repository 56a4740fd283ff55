"""The standard training augmentation an ordinary attacker uses, as kornia modules on [0, 1] batches.

`standard`: random crop with zero padding of 1/8 of the side for small images (< 96 px, the CIFAR
recipe: 4 px on 32 px), random-resized crop (scale 0.25–1, aspect 3/4–4/3) for large ones, and a
horizontal flip with p = 0.5 only when every task is flip-safe (`TaskSpec.flip_safe`): one image
carries every task's label, so a flip that would corrupt one task's label is never applied.
"""

from __future__ import annotations

import torch

from mtlue.errors import ConfigError

AUGMENTS = ("none", "standard")
SMALL_IMAGE_PX = 96
RESIZED_CROP_SCALE = (0.25, 1.0)


def flips_allowed(tasks) -> bool:
    """A horizontal flip is label-preserving only when every task says so."""
    tasks = tuple(tasks)
    return bool(tasks) and all(t.flip_safe for t in tasks)


def build_augmentation(kind: str, tasks, image_shape) -> torch.nn.Module:
    """`kind` ∈ AUGMENTS for (H, W, C) images → a module mapping (N, C, H, W) batches to augmented ones."""
    if kind not in AUGMENTS:
        raise ConfigError(f"augment {kind!r}: one of {', '.join(AUGMENTS)}")
    if kind == "none":
        return torch.nn.Identity()
    return standard_augmentation(image_shape, flip=flips_allowed(tasks))


def standard_augmentation(image_shape, flip: bool) -> torch.nn.Module:
    """The standard augmentation's kornia modules (module doc), with or without the horizontal flip: the one
    implementation victims train with and the MTL-UE generator's EOT optimises against."""
    import kornia.augmentation as KA

    height, width = int(image_shape[0]), int(image_shape[1])
    if min(height, width) < SMALL_IMAGE_PX:
        steps = [KA.RandomCrop((height, width), padding=max(1, min(height, width) // 8), p=1.0)]
    else:
        steps = [KA.RandomResizedCrop((height, width), scale=RESIZED_CROP_SCALE, p=1.0)]
    if flip:
        steps.append(KA.RandomHorizontalFlip(p=0.5))
    return torch.nn.Sequential(*steps)


def describe_augmentation(kind: str, tasks, image_shape) -> str:
    """One line for reports: what `build_augmentation` does on these images and tasks."""
    if kind == "none":
        return "none"
    height, width = int(image_shape[0]), int(image_shape[1])
    pad = max(1, min(height, width) // 8)
    dense = any(t.is_dense for t in tasks)  # mtlue.train moves dense label maps with the image
    if dense:
        crop = f"random crop, {pad} px reflect padding (labels: invalid)"
    elif min(height, width) < SMALL_IMAGE_PX:
        crop = f"random crop, {pad} px zero padding"
    else:
        crop = f"random-resized crop (scale {RESIZED_CROP_SCALE[0]:g}-{RESIZED_CROP_SCALE[1]:g})"
    unsafe = [t.name for t in tasks if not t.flip_safe and not t.is_dense]  # a dense label flips with its image
    if unsafe:
        flip = f"no flip ({', '.join(unsafe)} not flip-safe)"
    else:
        flip = "label-aware flip" if dense else "horizontal flip"
    return f"{crop} + {flip}"
