"""The defense hook interface and the helpers every defense shares.

A defense is called on each training batch as
``defense(images, labels, masks, model) -> (images, [(weight, labels_dict[, masks_dict]), ...])``:
images are float in [0, 1], shape (B, C, H, W), on any device; the victim's loss per task is
``Σ_j weight_j · task_loss(labels_j)`` with masks_j (the batch's own masks when a target has none). Weights are python floats
(one per target, summing to 1), so the training loop needs no per-sample weighting.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn


def identity_targets(labels: dict) -> list:
    """The hook's label list for a defense that leaves labels alone: ``[(1.0, labels)]``."""
    return [(1.0, labels)]


def check_images(images: torch.Tensor, who: str) -> None:
    """Images must be a float (B, C, H, W) batch; raise ValueError naming the defense otherwise."""
    if images.dim() != 4 or not images.is_floating_point():
        raise ValueError(f"defense {who}: expects float images (B, C, H, W) in [0, 1], got {tuple(images.shape)} {images.dtype}")


def draw_seed(generator: torch.Generator | None) -> int | None:
    """One 63-bit seed drawn from `generator` (None when no generator is given)."""
    if generator is None:
        return None
    return int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device).item())


@contextlib.contextmanager
def seeded_global_rng(generator: torch.Generator | None, device: torch.device):
    """Run ops that only know the global RNG (kornia augmentations) reproducibly from `generator`.

    The global CPU (and `device`'s CUDA) RNG state is saved, seeded from a draw of `generator`,
    and restored on exit, so the caller's global RNG stream is left untouched. With no generator
    the block uses the global RNG as it is.
    """
    seed = draw_seed(generator)
    if seed is None:
        yield
        return
    cuda_devices = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda_devices):
        torch.default_generator.manual_seed(seed)
        if cuda_devices:
            with torch.cuda.device(cuda_devices[0]):
                torch.cuda.manual_seed(seed)
        yield


def uniform(shape, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """U[0, 1) draws made on the generator's device, then moved to `device`."""
    gen_device = generator.device if generator is not None else torch.device("cpu")
    return torch.rand(shape, generator=generator, device=gen_device).to(device)


class Defense(nn.Module):
    """Base class of training-time defenses: `forward(images, labels, masks, model)` is the hook.

    `name` is the canonical registry name (e.g. ``jpeg10``), written into histories and reports.
    """

    name: str = "defense"

    def forward(self, images: torch.Tensor, labels: dict, masks: dict, model: nn.Module):
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"name={self.name!r}"


class TransformDefense(Defense):
    """A defense that only transforms images (labels untouched): wraps an image-op module."""

    def __init__(self, name: str, transform: nn.Module):
        super().__init__()
        self.name = name
        self.transform = transform

    def forward(self, images, labels, masks, model):
        check_images(images, self.name)
        return self.transform(images), identity_targets(labels)


__all__ = ["Defense", "TransformDefense", "identity_targets", "check_images", "draw_seed", "seeded_global_rng", "uniform"]
