"""Dense labels (segmentation, depth, surface normals): invalid markers, validity and the horizontal flip.

Layouts (see `mtlue.data.base.label_tensor`): arrays are channels-last, segmentation (N,H,W) int with
−1 void, depth (N,H,W,1) metres with 0 invalid, normals (N,H,W,3) unit vectors with (0,0,0) invalid;
tensors are (B,H,W), (B,1,H,W), (B,3,H,W). Normals are in the camera frame with x pointing right, so
a horizontal flip of the picture negates their x component (as the MTAN/LibMTL NYUv2 augmentation).
"""

from __future__ import annotations

import torch

from mtlue.data.base import TaskSpec

INVALID = {"segmentation": -1, "depth": 0.0, "normal": 0.0}


def valid_pixels(task: TaskSpec, target: torch.Tensor, present: torch.Tensor | None = None) -> torch.Tensor:
    """bool (B,H,W): where a dense label (tensor layout) holds a value, and, given the per-sample
    label-present mask `present` (B,), only in the samples whose label is present."""
    if task.kind == "segmentation":
        valid = (target >= 0) & (target < task.num_classes)
    elif task.kind == "depth":
        valid = target[:, 0] > 0
    elif task.kind == "normal":
        valid = (target != 0).any(1)
    else:
        raise ValueError(f"task {task.name!r}: kind {task.kind!r} is not dense")
    return valid if present is None else valid & present.reshape(-1, 1, 1).bool()


def hflip_label(task: TaskSpec, target: torch.Tensor) -> torch.Tensor:
    """The label of the horizontally flipped picture (tensor layout): mirrored columns, normal x negated."""
    flipped = target.flip(-1)
    if task.kind == "normal":
        flipped = flipped.clone()
        flipped[:, 0] = -flipped[:, 0]
    return flipped
