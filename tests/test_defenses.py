"""Training-time defenses transform images as documented and plug into the training hook."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from torch import nn

from mtlue.data.base import TaskSpec
from mtlue.defenses import (bit_depth_reduction, build_defense, canonical_defense_name, cutmix, cutout, grayscale, jpeg,
                            mixup, ueraser_lite)
from mtlue.errors import ConfigError
from mtlue.models.losses import task_losses

TASKS = (TaskSpec("digit", "multiclass", 10), TaskSpec("even", "binary", 2))


def noisy_images(batch=4, channels=3, size=32, seed=0):
    return torch.rand(batch, channels, size, size, generator=torch.Generator().manual_seed(seed))


def batch_labels(batch=4):
    labels = {"digit": torch.arange(batch) % 10, "even": (torch.arange(batch) % 2 == 0).long()}
    masks = {name: torch.ones(batch, dtype=torch.bool) for name in labels}
    return labels, masks


def test_grayscale_replicates_bt601_luma_and_keeps_one_channel_images():
    images = torch.zeros(1, 3, 2, 2)
    images[0, :, 0, 0] = torch.tensor([1.0, 0.5, 0.25])
    gray = grayscale(images)
    assert gray.shape == images.shape
    assert torch.equal(gray[:, 0], gray[:, 1]) and torch.equal(gray[:, 1], gray[:, 2])
    assert gray[0, 0, 0, 0].item() == pytest.approx(0.299 * 1.0 + 0.587 * 0.5 + 0.114 * 0.25, abs=1e-6)
    single = noisy_images(channels=1)
    assert torch.equal(grayscale(single), single)
    with pytest.raises(ConfigError, match="grayscale"):
        grayscale(noisy_images(channels=2))


def test_jpeg10_changes_a_noisy_image_deterministically_and_stays_in_range():
    images = noisy_images()
    squeezed = jpeg(images, 10)
    assert squeezed.shape == images.shape and squeezed.dtype == images.dtype
    assert (squeezed - images).abs().mean() > 0.05  # quality 10 wipes out pixel noise
    assert torch.equal(squeezed, jpeg(images, 10))
    assert squeezed.min() >= 0 and squeezed.max() <= 1
    assert torch.equal(squeezed * 255, (squeezed * 255).round())  # decoded uint8 values
    # higher quality stays closer to the input
    assert (jpeg(images, 95) - images).abs().mean() < (squeezed - images).abs().mean()
    gray = jpeg(noisy_images(channels=1), 10)
    assert gray.shape == (4, 1, 32, 32)


def test_jpeg_and_bdr_pass_gradients_straight_through():
    images = noisy_images().requires_grad_(True)
    (jpeg(images, 10).sum() + bit_depth_reduction(images, 2).sum()).backward()
    assert torch.allclose(images.grad, torch.full_like(images, 2.0))


def test_bdr2_yields_four_levels_of_the_top_two_bits():
    images = torch.arange(256, dtype=torch.float32).div(255).view(1, 1, 16, 16)
    squeezed = bit_depth_reduction(images, 2)
    assert sorted(set((squeezed * 255).round().long().flatten().tolist())) == [0, 64, 128, 192]
    # bins are those of floor(4x)/4 on the uint8 grid; 1.0 stays in the top bin
    assert torch.equal((squeezed * 255).round().long().flatten() // 64, torch.arange(256) // 64)
    assert len(torch.unique(bit_depth_reduction(noisy_images(), 1))) == 2


def test_cutout_zeroes_one_half_side_square_per_image():
    images = torch.ones(6, 3, 32, 32)
    erased = cutout(images, generator=torch.Generator().manual_seed(0))
    for image in erased:
        zero = image[0] == 0
        assert torch.equal(zero, (image == 0).all(0))  # every channel erased together
        rows, cols = zero.any(1).nonzero().flatten(), zero.any(0).nonzero().flatten()
        assert len(rows) == 16 and len(cols) == 16 and int(zero.sum()) == 256  # one 16×16 square
    big = cutout(torch.ones(2, 1, 64, 64), generator=torch.Generator().manual_seed(1))
    assert int((big[0] == 0).sum()) == 32 * 32  # scales with the image
    again = cutout(images, generator=torch.Generator().manual_seed(0))
    assert torch.equal(erased, again)


def test_mixup_returns_a_convex_combination_and_weights_that_sum_to_one():
    images = noisy_images(8)
    labels, masks = batch_labels(8)
    defense = build_defense("mixup", TASKS, generator=torch.Generator().manual_seed(3))
    mixed, targets = defense(images, labels, masks, model=None)
    (lam, first, first_masks), (rest, second, second_masks) = targets
    assert lam + rest == pytest.approx(1.0) and 0 <= lam <= 1
    assert first is labels and first_masks is masks
    # the same generator seed reproduces the permutation: check pixels and permuted labels
    _, perm, lam2 = mixup(images, 1.0, torch.Generator().manual_seed(3))
    assert lam2 == pytest.approx(lam)
    assert torch.allclose(mixed, lam * images + (1 - lam) * images[perm], atol=1e-6)
    assert torch.equal(second["digit"], labels["digit"][perm])
    assert torch.equal(second_masks["digit"], masks["digit"][perm])  # a missing label stays with its image


def test_cutmix_pastes_one_box_and_weights_labels_by_area():
    images = torch.zeros(8, 3, 32, 32)
    images += torch.arange(8, dtype=torch.float32).view(8, 1, 1, 1) / 10  # each image a constant
    labels, masks = batch_labels(8)
    for seed in range(5):
        defense = build_defense("cutmix", TASKS, generator=torch.Generator().manual_seed(seed))
        mixed, [(lam, first, _), (rest, second, _)] = defense(images, labels, masks, model=None)
        assert lam + rest == pytest.approx(1.0)
        _, perm, _ = cutmix(images, 1.0, torch.Generator().manual_seed(seed))
        for i in range(8):
            pasted = mixed[i, 0] != images[i, 0, 0, 0]
            if perm[i] != i:
                assert pasted.float().mean().item() == pytest.approx(1 - lam)
            kept_or_pasted = (mixed[i] == images[i]) | (mixed[i] == images[perm[i]])
            assert kept_or_pasted.all()
        assert torch.equal(second["even"], labels["even"][perm])


def test_ueraser_lite_keeps_shape_range_and_is_reproducible_with_a_generator():
    for channels in (1, 3):
        images = noisy_images(channels=channels)
        state = torch.random.get_rng_state()
        out = ueraser_lite(images, torch.Generator().manual_seed(5))
        assert torch.equal(state, torch.random.get_rng_state())  # the caller's global RNG is untouched
        assert out.shape == images.shape and out.min() >= 0 and out.max() <= 1
        assert not torch.equal(out, images)
        assert torch.equal(out, ueraser_lite(images, torch.Generator().manual_seed(5)))


@pytest.mark.parametrize("name", ["grayscale", "jpeg10", "bdr2", "cutout", "ueraser_lite"])
def test_image_defenses_leave_labels_alone(name):
    images = noisy_images()
    labels, masks = batch_labels()
    out, targets = build_defense(name, TASKS, generator=torch.Generator().manual_seed(0))(images, labels, masks, None)
    assert out.shape == images.shape
    assert targets == [(1.0, labels)]


def test_names_parse_and_unknown_names_list_the_valid_ones():
    assert build_defense("none", TASKS) is None and build_defense(None, TASKS) is None
    assert canonical_defense_name("JPEG") == "jpeg10" and canonical_defense_name("bdr3") == "bdr3"
    assert build_defense("jpeg25", TASKS).transform.quality == 25
    assert build_defense("bdr2", TASKS).name == "bdr2"
    for bad in ("blur", "jpeg0", "bdr9", "jpegx"):
        with pytest.raises(ConfigError) as error:
            build_defense(bad, TASKS)
        assert bad in str(error.value) and "jpeg<q>" in str(error.value) and "ueraser_lite" in str(error.value)


class TinyNet(nn.Module):
    """Linear two-task model on 3×8×8 images."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.tasks = TASKS
        self.body = nn.Linear(3 * 8 * 8, 11)

    def forward(self, x):
        out = self.body(x.flatten(1))
        return {"digit": out[:, :10], "even": out[:, 10]}


@pytest.mark.skipif(importlib.util.find_spec("mtlue.attacks.pgd") is None, reason="mtlue.attacks (PGD) not written yet")
def test_adversarial_training_stays_in_the_eps_ball_and_raises_the_loss():
    model = TinyNet().train()
    images = noisy_images(16, size=8)
    labels, masks = batch_labels(16)
    defense = build_defense("at", TASKS, generator=torch.Generator().manual_seed(0))
    adversarial, targets = defense(images, labels, masks, model)
    assert targets == [(1.0, labels)]
    assert (adversarial - images).abs().max() <= 8 / 255 + 1e-6
    assert adversarial.min() >= 0 and adversarial.max() <= 1
    assert model.training and all(p.requires_grad and p.grad is None for p in model.parameters())
    with torch.no_grad():
        clean_loss = task_losses(TASKS, model(images), labels, masks).sum()
        adversarial_loss = task_losses(TASKS, model(adversarial), labels, masks).sum()
    assert adversarial_loss > clean_loss
