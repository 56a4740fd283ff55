"""Image shortcut squeezing (Liu et al., ICML 2023): grayscale, JPEG and bit-depth reduction.

Each op is a function and an nn.Module, batched over (B, C, H, W) float images in [0, 1] on any
device. Grayscale is differentiable; JPEG and bit-depth reduction are piecewise constant, so when
the input requires grad they pass the gradient straight through (BPDA: value of the op, gradient of
the identity). `jpeg_differentiable` is kornia's differentiable JPEG (Reich et al., WACV 2024), the
generator's stand-in for the PIL codec when it trains against JPEG (`mtlue protect --robust jpeg`).
"""

from __future__ import annotations

import io

import numpy as np
import torch
from torch import nn

from mtlue.defenses.base import TransformDefense, check_images, uniform
from mtlue.errors import ConfigError


def _straight_through(images: torch.Tensor, squeezed: torch.Tensor) -> torch.Tensor:
    """Forward value `squeezed`, backward the identity; exact `squeezed` when no grad is needed."""
    if images.requires_grad:
        return images + (squeezed - images).detach()
    return squeezed


def grayscale(images: torch.Tensor) -> torch.Tensor:
    """ITU-R BT.601 luma Y = 0.299 R + 0.587 G + 0.114 B, replicated to the C=3 input channels.

    A 1-channel batch is returned unchanged; other channel counts raise ConfigError.
    """
    check_images(images, "grayscale")
    channels = images.shape[1]
    if channels == 1:
        return images
    if channels != 3:
        raise ConfigError(f"defense grayscale: needs 1 or 3 image channels, got {channels}")
    import kornia

    luma = kornia.color.rgb_to_grayscale(images)  # BT.601 weights (0.299, 0.587, 0.114)
    return luma.repeat(1, channels, 1, 1)


def check_jpeg_quality(quality: int) -> int:
    if not 1 <= int(quality) <= 100:
        raise ConfigError(f"defense jpeg<q>: quality must be in 1..100, got {quality}")
    return int(quality)


def jpeg(images: torch.Tensor, quality: int = 10) -> torch.Tensor:
    """PIL JPEG round trip at `quality`: round(255·x) → uint8 → JPEG encode/decode → /255.

    Runs on CPU (PIL) and returns to the input's device and dtype. RGB batches are coded as RGB
    (PIL's default 4:2:0 chroma subsampling, as ISS/APBench); any other channel count is coded one
    channel at a time as 8-bit grayscale. Deterministic: same input, same output.
    """
    check_images(images, f"jpeg{quality}")
    quality = check_jpeg_quality(quality)
    from PIL import Image

    pixels = images.detach().clamp(0, 1).mul(255).round().to("cpu", torch.uint8).permute(0, 2, 3, 1).numpy()

    def code(array: np.ndarray) -> np.ndarray:
        buffer = io.BytesIO()
        Image.fromarray(array).save(buffer, format="JPEG", quality=quality)
        buffer.seek(0)
        with Image.open(buffer) as decoded:
            return np.asarray(decoded.convert("RGB" if array.ndim == 3 else "L"))

    if pixels.shape[-1] == 3:
        coded = np.stack([code(p) for p in pixels])
    else:
        coded = np.stack([np.stack([code(p[..., c]) for c in range(p.shape[-1])], axis=-1) for p in pixels])
    squeezed = torch.from_numpy(coded).permute(0, 3, 1, 2).to(images.device, images.dtype).div(255)
    return _straight_through(images, squeezed)


def check_bits(bits: int) -> int:
    if not 1 <= int(bits) <= 8:
        raise ConfigError(f"defense bdr<bits>: bits must be in 1..8, got {bits}")
    return int(bits)


def bit_depth_reduction(images: torch.Tensor, bits: int = 2) -> torch.Tensor:
    """Bit-depth reduction: keep the top `bits` bits of each 8-bit pixel (posterize).

    y = 2^(8-b) · floor(round(255·x) / 2^(8-b)) / 255, i.e. kornia.enhance.posterize and
    PIL.ImageOps.posterize on the uint8 grid the victim trains on. For b = 2 the output takes the
    4 levels {0, 64, 128, 192}/255: the bins of floor(4x)/4, with x = 1 kept in the top bin.
    """
    check_images(images, f"bdr{bits}")
    bits = check_bits(bits)
    import kornia

    on_grid = images.detach().clamp(0, 1).mul(255).round().div(255)  # snap float error to the uint8 grid
    squeezed = kornia.enhance.posterize(on_grid, bits)
    return _straight_through(images, squeezed)


def jpeg_differentiable(images: torch.Tensor, quality) -> torch.Tensor:
    """kornia's differentiable JPEG at `quality` (a number or a (B,) tensor, each in 1..100).

    RGB batches are coded as RGB (4:2:0 chroma, as PIL); a 1-channel batch is coded as a gray RGB image
    and its luma kept. Height and width need not be multiples of 16 (kornia pads). Output in [0, 1].
    """
    check_images(images, "jpeg (differentiable)")
    import kornia

    quality = torch.as_tensor(quality, dtype=images.dtype, device=images.device).reshape(-1)
    if not bool(((quality >= 1) & (quality <= 100)).all()):
        raise ConfigError(f"defense jpeg<q>: quality must be in 1..100, got {quality.tolist()}")
    quality = quality.expand(images.shape[0]) if quality.numel() == 1 else quality
    channels = images.shape[1]
    if channels not in (1, 3):
        raise ConfigError(f"defense jpeg (differentiable): needs 1 or 3 image channels, got {channels}")
    rgb = images.clamp(0, 1) if channels == 3 else images.clamp(0, 1).repeat(1, 3, 1, 1)
    coded = kornia.enhance.jpeg_codec_differentiable(rgb, quality).clamp(0, 1)
    return coded if channels == 3 else kornia.color.rgb_to_grayscale(coded)


class Grayscale(nn.Module):
    """Module form of `grayscale`."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return grayscale(images)


class JPEG(nn.Module):
    """Module form of `jpeg` at a fixed quality."""

    def __init__(self, quality: int = 10):
        super().__init__()
        self.quality = check_jpeg_quality(quality)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return jpeg(images, self.quality)

    def extra_repr(self) -> str:
        return f"quality={self.quality}"


class DifferentiableJPEG(nn.Module):
    """Module form of `jpeg_differentiable`: a fixed quality, or one drawn per image uniformly from
    [low, high] by `generator` (EOT over JPEG qualities)."""

    def __init__(self, quality: int | tuple = 10, generator: torch.Generator | None = None):
        super().__init__()
        low, high = (quality, quality) if isinstance(quality, (int, float)) else quality
        self.low, self.high = check_jpeg_quality(low), check_jpeg_quality(high)
        if self.low > self.high:
            raise ConfigError(f"defense jpeg: quality range {low}..{high} is empty")
        self.generator = generator

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        draw = uniform((images.shape[0],), self.generator, images.device)
        quality = self.low + draw * (self.high - self.low)
        return jpeg_differentiable(images, quality.to(images.dtype))

    def extra_repr(self) -> str:
        return f"quality={self.low}..{self.high}"


class BitDepthReduction(nn.Module):
    """Module form of `bit_depth_reduction` at a fixed bit depth."""

    def __init__(self, bits: int = 2):
        super().__init__()
        self.bits = check_bits(bits)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return bit_depth_reduction(images, self.bits)

    def extra_repr(self) -> str:
        return f"bits={self.bits}"


def grayscale_defense(generator=None) -> TransformDefense:
    """The `grayscale` training hook."""
    return TransformDefense("grayscale", Grayscale())


def jpeg_defense(quality: int, generator=None) -> TransformDefense:
    """The `jpeg<q>` training hook (PIL codec, straight-through gradient)."""
    return TransformDefense(f"jpeg{quality}", JPEG(quality))


def bdr_defense(bits: int, generator=None) -> TransformDefense:
    """The `bdr<bits>` training hook (straight-through gradient)."""
    return TransformDefense(f"bdr{bits}", BitDepthReduction(bits))


__all__ = ["grayscale", "jpeg", "jpeg_differentiable", "bit_depth_reduction", "Grayscale", "JPEG",
           "DifferentiableJPEG", "BitDepthReduction", "grayscale_defense", "jpeg_defense", "bdr_defense"]
