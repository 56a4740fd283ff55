"""Label-mixing augmentations: mixup (Zhang et al., ICLR 2018) and cutmix (Yun et al., ICCV 2019).

One λ per batch, as the reference implementations: images are mixed with a random permutation
of the batch and the hook returns ``[(λ, labels, masks), (1 − λ, labels[perm], masks[perm])]``, so the
victim's loss is λ·ℓ(y) + (1 − λ)·ℓ(y_perm) with python-float weights summing to 1; a label missing
in either half counts only in the half it belongs to. Cutmix pastes a dense label map (a label with
spatial dimensions) with its box into both halves, so a dense task is scored on the pasted map. Randomness (λ ~ Beta(α, α),
the permutation, the cutmix box) comes from an explicit torch.Generator.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from mtlue.defenses.base import Defense, check_images, draw_seed, uniform


def _beta(alpha: float, generator: torch.Generator | None) -> float:
    """λ ~ Beta(α, α), drawn by numpy from a seed taken from `generator` (torch's Beta takes none)."""
    seed = draw_seed(generator) if generator is not None else int(torch.randint(0, 2**62, (1,)).item())
    rng = np.random.default_rng(seed)
    return float(rng.beta(alpha, alpha))


def _permutation(batch: int, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    gen_device = generator.device if generator is not None else torch.device("cpu")
    return torch.randperm(batch, generator=generator, device=gen_device).to(device)


def mixup(images: torch.Tensor, alpha: float = 1.0, generator: torch.Generator | None = None):
    """x̃ = λ·x + (1 − λ)·x[perm], λ ~ Beta(α, α); returns (mixed, perm, λ)."""
    check_images(images, "mixup")
    lam = _beta(alpha, generator)
    perm = _permutation(images.shape[0], generator, images.device)
    return lam * images + (1.0 - lam) * images[perm], perm, lam


def cutmix(images: torch.Tensor, alpha: float = 1.0, generator: torch.Generator | None = None):
    """Paste one box of x[perm] into every image; returns (mixed, perm, λ = kept-area fraction).

    The box has area fraction 1 − λ₀ (λ₀ ~ Beta(α, α)), a uniform centre, and is clipped to the
    image; λ is recomputed from the clipped box so the label weights equal the pixel areas.
    """
    mixed, perm, lam, _ = _cutmix_with_box(images, alpha, generator)
    return mixed, perm, lam


def _cutmix_with_box(images, alpha, generator):
    """`cutmix`, and the (H, W) bool box it pasted."""
    check_images(images, "cutmix")
    batch, _, height, width = images.shape
    lam0 = _beta(alpha, generator)
    perm = _permutation(batch, generator, images.device)
    cut = math.sqrt(1.0 - lam0)
    box_h, box_w = int(height * cut), int(width * cut)
    centre = uniform((2,), generator, torch.device("cpu"))
    cy, cx = int(centre[0] * height), int(centre[1] * width)
    top, bottom = max(cy - box_h // 2, 0), min(cy + box_h // 2, height)
    left, right = max(cx - box_w // 2, 0), min(cx + box_w // 2, width)
    rows = torch.arange(height, device=images.device).view(height, 1)
    cols = torch.arange(width, device=images.device).view(1, width)
    box = (rows >= top) & (rows < bottom) & (cols >= left) & (cols < right)
    inside = box.to(images.dtype)
    mixed = images * (1 - inside) + images[perm] * inside
    lam = 1.0 - (bottom - top) * (right - left) / (height * width)
    return mixed, perm, lam, box


def permuted_labels(labels: dict, perm: torch.Tensor) -> dict:
    """Every task's labels reordered by `perm` (moved to each label tensor's device)."""
    return {name: value[perm.to(value.device)] for name, value in labels.items()}


class MixUp(Defense):
    """mixup as a training hook: returns [(λ, labels, masks), (1 − λ, labels[perm], masks[perm])]."""

    name = "mixup"

    def __init__(self, alpha: float = 1.0, generator: torch.Generator | None = None):
        super().__init__()
        self.alpha = alpha
        self.generator = generator

    def forward(self, images, labels, masks, model):
        mixed, perm, lam = mixup(images, self.alpha, self.generator)
        return mixed, [(lam, labels, masks), (1.0 - lam, permuted_labels(labels, perm), permuted_labels(masks, perm))]


class CutMix(Defense):
    """cutmix as a training hook: returns [(λ, labels, masks), (1 − λ, labels[perm], masks[perm])], λ = kept area;
    a dense label map is the pasted map in both (its mask: both samples labelled)."""

    name = "cutmix"

    def __init__(self, alpha: float = 1.0, generator: torch.Generator | None = None):
        super().__init__()
        self.alpha = alpha
        self.generator = generator

    def forward(self, images, labels, masks, model):
        mixed, perm, lam, box = _cutmix_with_box(images, self.alpha, self.generator)
        kept, pasted = (labels, masks), (permuted_labels(labels, perm), permuted_labels(masks, perm))
        dense = [name for name, value in labels.items() if value.dim() > 1]
        if dense:
            maps = {name: torch.where(box.to(labels[name].device), pasted[0][name], labels[name]) for name in dense}
            both = {name: masks[name] & pasted[1][name] for name in dense if name in masks}
            kept = ({**kept[0], **maps}, {**kept[1], **both})
            pasted = ({**pasted[0], **maps}, {**pasted[1], **both})
        return mixed, [(lam, *kept), (1.0 - lam, *pasted)]


__all__ = ["mixup", "cutmix", "permuted_labels", "MixUp", "CutMix"]
