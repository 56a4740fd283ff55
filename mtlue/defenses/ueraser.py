"""UEraser-lite (Qin et al., 2023): strong kornia augmentation, one augmented copy per image.

The chain, after lafeat/ueraser's `UEraser`: plasma brightness (roughness 0.1–0.7, intensity
0–1, p=1), plasma contrast (roughness 0.1–0.7, p=1), channel shuffle (p=0.5, RGB only), then a
random affine (±15°, 10% shift, scale 0.9–1.1, p=0.5) and random erasing (p=0.5) in place of its
TrivialAugment; output clamped to [0, 1]. "Lite" = no adversarial repeat (K=1). kornia draws from
the global RNG; with a generator the call runs under a global RNG seeded from it and restored
afterwards (see `seeded_global_rng`), so runs are reproducible and the caller's stream is untouched.
"""

from __future__ import annotations

import torch
from torch import nn

from mtlue.defenses.base import TransformDefense, check_images, seeded_global_rng


def ueraser_lite_chain(channels: int) -> nn.Module:
    """The kornia augmentation chain for `channels`-channel images (no channel shuffle unless 3)."""
    import kornia.augmentation as K

    ops = [
        K.RandomPlasmaBrightness(roughness=(0.1, 0.7), intensity=(0.0, 1.0), p=1.0),
        K.RandomPlasmaContrast(roughness=(0.1, 0.7), p=1.0),
    ]
    if channels == 3:
        ops.append(K.RandomChannelShuffle(p=0.5))
    ops += [
        K.RandomAffine(degrees=15.0, translate=(0.1, 0.1), scale=(0.9, 1.1), p=0.5),
        K.RandomErasing(p=0.5),
    ]
    return K.AugmentationSequential(*ops)


class UEraserLite(nn.Module):
    """Module form of `ueraser_lite`; keeps one chain per channel count and the generator."""

    def __init__(self, generator: torch.Generator | None = None):
        super().__init__()
        self.generator = generator
        self.chains = nn.ModuleDict()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        check_images(images, "ueraser_lite")
        key = str(images.shape[1])
        if key not in self.chains:
            self.chains[key] = ueraser_lite_chain(images.shape[1])
        with seeded_global_rng(self.generator, images.device):
            augmented = self.chains[key](images)
        return augmented.clamp(0, 1)


def ueraser_lite(images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Apply the UEraser-lite chain once to a (B, C, H, W) batch in [0, 1]; same shape, in [0, 1]."""
    return UEraserLite(generator)(images)


def ueraser_lite_defense(generator=None) -> TransformDefense:
    """The `ueraser_lite` training hook."""
    return TransformDefense("ueraser_lite", UEraserLite(generator))


__all__ = ["ueraser_lite", "ueraser_lite_chain", "UEraserLite", "ueraser_lite_defense"]
