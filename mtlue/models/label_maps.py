"""Dense MTL-UE: a learned label-map embedding E^k(y^k) per dense task, in place of the class lookup.

OUR OWN DESIGN. The MTL-UE paper says only that for NYUv2 the class-embedding lookup e^k_{y^k} is
replaced by "a learned embedding module" of the task's label map and that no embedding regulariser is
used for dense tasks; it gives no architecture, input encoding or size. What we chose, and why:

- Input encoding (`encode_label_map`), so every label kind reaches the network as bounded channels that
  say where the label is missing instead of leaving an invalid marker to look like a value:
  segmentation: one-hot over the C classes plus a void channel (label −1), C + 1 channels;
  depth: [log(1 + depth), valid], 2 channels; log1p keeps metres (NYUv2: ≤ about 10 m) at O(1) without
  a dataset-specific scale, and the invalid marker 0 stays 0 with valid = 0;
  normals: [n_x, n_y, n_z, valid], 4 channels (unit vectors, the (0,0,0) marker has valid = 0).
  A label that is absent (mask False) or a task that is not protected is encoded as an all-invalid map
  (segmentation: all void; depth and normals: valid = 0): "nothing known", the dense analogue of the
  mean class embedding the lookup uses there.
- Body (`LabelMapEmbedding`): area pooling of that encoding to the generator latent's S_h×S_w, then
  three 3×3 conv layers (ReLU between) to 16 channels. The lookup embedding it replaces is a 16×S×S map
  concatenated with z, so this drops into the same place with the decoder unchanged. Pooling first
  is exact and parameter-free (a pooled one-hot is each latent cell's class fractions; pooled validity
  is the share of valid pixels), keeps the cost at O(S²) instead of O(H·W), and the decoder, which
  upsamples from S×S anyway, cannot use sub-cell detail the lookup never had either. The convs give
  each latent cell a few cells of label context (receptive field 7×7 cells), so the perturbation can
  follow region boundaries.
- No intra-/inter-task regulariser acts on these modules (the paper: none for dense tasks); the
  classification tasks of a mixed dataset keep their lookup tables and regularisers.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from mtlue.data.base import TaskSpec
from mtlue.data.dense import INVALID, valid_pixels

HIDDEN_CHANNELS = 32


def encoded_channels(task: TaskSpec) -> int:
    """Channels of `encode_label_map` for `task`: C + 1 (segmentation), 2 (depth), 4 (normals)."""
    if task.kind == "segmentation":
        return task.num_classes + 1
    if task.kind == "depth":
        return 2
    if task.kind == "normal":
        return 4
    raise ValueError(f"task {task.name!r}: kind {task.kind!r} has no label map")


def encode_label_map(task: TaskSpec, label: torch.Tensor, present: torch.Tensor | None = None,
                     dtype=torch.float32) -> torch.Tensor:
    """(B, encoded_channels, H, W) encoding of a batch of dense labels in the tensor layout of
    `mtlue.data.base.label_tensor` (validity as `mtlue.data.dense.valid_pixels`). Samples with
    `present` False (per-sample bool (B,)) are encoded as all invalid."""
    if task.kind == "segmentation":
        classes = task.num_classes
        valid = valid_pixels(task, label, present)
        # class c -> channel c, void (-1) -> channel C
        index = torch.where(valid, label.long(), torch.full_like(label, classes, dtype=torch.long))
        return F.one_hot(index, classes + 1).permute(0, 3, 1, 2).to(dtype)
    value = label.to(dtype)
    valid = valid_pixels(task, label).unsqueeze(1).to(dtype)
    value = (torch.log1p(value.clamp_min(0.0)) if task.kind == "depth" else value) * valid
    if present is not None:
        keep = present.reshape(-1, 1, 1, 1).to(dtype)
        value, valid = value * keep, valid * keep
    return torch.cat([value, valid], 1)


class LabelMapEmbedding(nn.Module):
    """E^k: a dense label map → a (B, out_channels, S_h, S_w) embedding at the generator latent's size
    (area pool of `encode_label_map`, then 3×3 conv-ReLU-conv-ReLU-conv; see the module docstring)."""

    def __init__(self, task: TaskSpec, spatial, out_channels: int, hidden: int = HIDDEN_CHANNELS):
        super().__init__()
        self.task = task
        self.spatial = (int(spatial[0]), int(spatial[1]))
        self.body = nn.Sequential(
            nn.Conv2d(encoded_channels(task), hidden, 3, 1, 1), nn.ReLU(inplace=True),
            nn.Conv2d(hidden, hidden, 3, 1, 1), nn.ReLU(inplace=True),
            nn.Conv2d(hidden, out_channels, 3, 1, 1))

    def forward(self, label: torch.Tensor, present: torch.Tensor | None = None) -> torch.Tensor:
        dtype = self.body[0].weight.dtype
        encoded = encode_label_map(self.task, label, present, dtype)
        return self.body(F.adaptive_avg_pool2d(encoded, self.spatial))

    def unknown(self, batch_size: int) -> torch.Tensor:
        """E^k of an all-invalid map ("nothing known": a task not protected), as `forward` gives for any
        label with `present` all False, without a label to read."""
        task = self.task
        planes = () if task.kind == "segmentation" else (task.output_dim,)  # the label's tensor layout
        return self(self.body[0].weight.new_full((batch_size,) + planes + self.spatial, INVALID[task.kind]))


__all__ = ["LabelMapEmbedding", "encode_label_map", "encoded_channels"]
