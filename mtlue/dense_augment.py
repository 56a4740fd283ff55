"""Label-aware augmentation for datasets with dense tasks: one random shift and flip applied to the image AND
its label maps. Victims (`mtlue.train`) train with it and the MTL-UE generator's EOT optimises against it.

The image-only augmentation (`mtlue.augment.standard_augmentation`) is fine for image-level labels, but a
dense label is tied to pixels: a shifted or flipped image against the unshifted label map teaches the
surrogate (and the generator) the wrong pixels. Here every sample draws one shift and one flip, and the
same ones move each dense label map:
- crop: the image is reflect-padded by 1/8 of its shorter side and cropped back to its size at a random
  offset; label maps are padded with their invalid marker instead (segmentation −1,
  depth 0, normals (0,0,0)), so the reflected border carries no label;
- flip (crop_flip): a horizontal flip with p = 0.5 of image and label maps, and the normals' x
  component is negated (the flip mirrors the scene; nyuv2.md §1.3).
Image-level labels pass through unchanged, so a flip is offered only when every such task is
flip-safe (`dense_flips_allowed`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mtlue.data.dense import INVALID, hflip_label


def dense_flips_allowed(tasks) -> bool:
    """A label-aware flip keeps every dense label right; image-level labels must be flip-safe themselves
    (without dense tasks: `mtlue.augment.flips_allowed` of a non-empty task list)."""
    return all(t.flip_safe for t in tasks if not t.is_dense)


def has_dense_tasks(tasks) -> bool:
    return any(t.is_dense for t in tasks)


class LabelAwareEOT(torch.nn.Module):
    """`kind` none | crop | crop_flip on (B,C,H,W) images; `forward(x, labels) -> (x', labels')` with
    the dense label maps of `tasks` moved as their images are (module docstring). Draws from torch's
    global generator, so a seeded caller replays it exactly."""

    def __init__(self, kind: str, image_shape, tasks):
        super().__init__()
        if kind not in ("none", "crop", "crop_flip"):
            raise ValueError(f"augment {kind!r}: one of none, crop, crop_flip")
        self.kind = kind
        self.height, self.width = int(image_shape[0]), int(image_shape[1])
        self.pad = max(1, min(self.height, self.width) // 8)
        self.dense = tuple(t for t in tasks if t.is_dense)

    def forward(self, x: torch.Tensor, labels: dict) -> tuple[torch.Tensor, dict]:
        if self.kind == "none":
            return x, labels
        batch, pad = x.shape[0], self.pad
        offsets = torch.randint(0, 2 * pad + 1, (batch, 2)).tolist()
        flips = (torch.rand(batch) < 0.5).tolist() if self.kind == "crop_flip" else [False] * batch
        out = self._move(F.pad(x, (pad,) * 4, mode="reflect"), offsets, flips, None)
        moved = dict(labels)
        for task in self.dense:
            label = labels[task.name]
            planar = label.dim() == 3  # segmentation (B,H,W)
            padded = F.pad(label.unsqueeze(1) if planar else label, (pad,) * 4, value=INVALID[task.kind])
            label = self._move(padded, offsets, flips, task)
            moved[task.name] = label.squeeze(1) if planar else label
        return out, moved

    def _move(self, padded: torch.Tensor, offsets, flips, task) -> torch.Tensor:
        """Per sample: the H×W window at its offset of the padded (B,C,H+2p,W+2p) map, flipped if drawn
        (a dense task's label as `mtlue.data.dense.hflip_label` flips it; task None: the image)."""
        rows = []
        for b, ((top, left), flip) in enumerate(zip(offsets, flips)):
            window = padded[b:b + 1, :, top:top + self.height, left:left + self.width]
            if flip:
                window = window.flip(-1) if task is None else hflip_label(task, window)
            rows.append(window)
        return torch.cat(rows)
