"""The MTL-UE generator's EOT: the victims' own augmentation (image-level or label-aware) and `--robust`'s
defenses, drawn before the surrogate sees x + δ."""

from __future__ import annotations

import torch

from mtlue.augment import standard_augmentation
from mtlue.dense_augment import LabelAwareEOT, dense_flips_allowed


def resolve_augment(kind: str, tasks) -> str:
    """The EOT augmentation in force: `auto` is the attacker's standard augmentation for these tasks,
    random crop plus a horizontal flip when every task's label survives one (mtlue.augment's rule; with
    dense tasks the label-aware EOT flips their maps along, `dense_flips_allowed`)."""
    if kind != "auto":
        return kind
    return "crop_flip" if tasks and dense_flips_allowed(tasks) else "crop"


def make_augment(kind: str, image_shape):
    """EOT before the surrogate for image-level tasks: the victims' standard augmentation itself
    (`mtlue.augment.standard_augmentation`: the same kornia crop, or random-resized crop from 96 px, with the
    flip only for crop_flip), so the generator optimises against the attacker's own transformations."""
    if kind == "none":
        return torch.nn.Identity()
    return standard_augmentation(image_shape, flip=kind == "crop_flip")


def augmented(augment, x: torch.Tensor, labels: dict, parallel=None) -> tuple[torch.Tensor, dict]:
    """(aug(x), labels) for the image-only EOT; the label-aware one moves dense label maps along.
    Under torchrun (`parallel`) the random draws are those of the whole global batch, as in one process."""
    if isinstance(augment, torch.nn.Identity):  # --augment none: nothing drawn, nothing to place
        return x, labels
    if parallel is not None:
        return parallel.on_global_batch(lambda xs, ls: augmented(augment, xs, ls), x, labels)
    if isinstance(augment, LabelAwareEOT):
        return augment(x, labels)
    return augment(x), labels


def robust_eot(names: tuple, eps: float):
    """The RobustEOT of `--robust` (None without defenses in the loop); `prepare` has checked the names."""
    if not names:
        return None
    from mtlue.protect.robust import RobustEOT

    return RobustEOT(names, eps)
