"""Victims for dense tasks (segmentation, depth, normals), with classification heads for mixed datasets.

Both are hard-parameter sharing, with the interface of `mtlue.models.mtl.MultiTaskNet`: `features(x)`
gives the shared representation (here a feature map), `heads_forward(rep)` a {task: output} dict, with
dense outputs at the input resolution: segmentation logits (B,C,H,W), depth (B,1,H,W), normals
(B,3,H,W) unnormalised (the loss and metrics normalise them).

- `SmallDenseNet` (backbone "small_cnn"): a small encoder–decoder for 32–64 px on a CPU: four
  conv–BN–ReLU stages down to 1/8, two upsampling stages with skip connections back to 1/2; each task
  a 3×3 conv–BN–ReLU and a 1×1 conv, upsampled ×2.
- `DilatedResNet` + DeepLab heads (backbones "resnet18", "resnet50"): LibMTL's NYUv2 victim, a torchvision
  ResNet dilated to output stride 8 (layer3 and layer4 without stride, their 3×3 convs dilated 2 and
  4; no weights are downloaded) with torchvision's DeepLabHead (ASPP, rates 12/24/36) per dense task,
  upsampled bilinearly to the input size.
Classification tasks of a mixed dataset pool the shared map: global average pool → Linear(·, 256) +
ELU → Linear, as the classification victims' heads.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mtlue.errors import ConfigError

OUTPUT_STRIDE = 8  # both encoders reduce the input 8×
CLASS_WIDTH = 256
DENSE_BACKBONES = ("small_cnn", "resnet18", "resnet50")


def conv_bn_relu(in_channels: int, out_channels: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
                         nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))


class SmallEncoderDecoder(nn.Module):
    """Encoder 1/1 → 1/8 (32, 64, 96, 128 channels), decoder with skips back to 1/2 (64 channels)."""

    def __init__(self, in_channels: int = 3, widths: tuple = (32, 64, 96, 128)):
        super().__init__()
        self.stem = conv_bn_relu(in_channels, widths[0])
        self.down = nn.ModuleList(conv_bn_relu(widths[i], widths[i + 1], stride=2) for i in range(3))
        self.up_quarter = conv_bn_relu(widths[3] + widths[2], widths[2])
        self.up_half = conv_bn_relu(widths[2] + widths[1], widths[1])
        self.out_channels, self.scale = widths[1], 2  # the map is at 1/2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = [self.stem(x)]
        for stage in self.down:
            skips.append(stage(skips[-1]))
        y = skips[3]
        for conv, skip in ((self.up_quarter, skips[2]), (self.up_half, skips[1])):
            y = conv(torch.cat([F.interpolate(y, size=skip.shape[-2:], mode="bilinear", align_corners=False), skip], 1))
        return y


class DilatedResNet(nn.Module):
    """A torchvision ResNet (random init) without avgpool/fc, layer3/4 strides replaced by dilation 2/4."""

    def __init__(self, name: str, in_channels: int = 3):
        super().__init__()
        import torchvision

        net = getattr(torchvision.models, name)(weights=None)
        if in_channels != 3:
            net.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
        for layer, dilation in ((net.layer3, 2), (net.layer4, 4)):
            _dilate(layer, dilation)
        self.body = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1, net.layer2, net.layer3, net.layer4)
        self.out_channels = net.fc.in_features
        self.scale = OUTPUT_STRIDE

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def _dilate(layer: nn.Module, dilation: int) -> None:
    """Remove the stride of a ResNet stage and dilate its 3×3 convs (the first, which had the stride, by
    dilation/2 as in Yu et al.'s dilated ResNet and LibMTL's resnet_dilated; the others by `dilation`)."""
    for name, module in layer.named_modules():
        if not isinstance(module, nn.Conv2d):
            continue
        strided = module.stride == (2, 2)
        module.stride = (1, 1)
        if module.kernel_size == (3, 3):
            d = dilation // 2 if strided else dilation
            module.dilation, module.padding = (d, d), (d, d)


def dense_head(task, channels: int, big: bool) -> nn.Module:
    if big:
        from torchvision.models.segmentation.deeplabv3 import DeepLabHead

        return DeepLabHead(channels, task.output_dim)
    return nn.Sequential(conv_bn_relu(channels, 32), nn.Conv2d(32, task.output_dim, 1))


class DenseMultiTaskNet(nn.Module):
    """Shared encoder(-decoder) map → one head per task (dense: conv head, classification: pooled MLP)."""

    def __init__(self, tasks, backbone: str = "small_cnn", in_channels: int = 3):
        super().__init__()
        if backbone not in DENSE_BACKBONES:
            raise ConfigError(f"--backbone {backbone!r}: dense tasks need one of {', '.join(DENSE_BACKBONES)}")
        self.tasks = tuple(tasks)
        self.backbone_name = backbone
        self.output_size = None  # H×W of the images `features` saw last: `heads_forward` upsamples to it
        big = backbone != "small_cnn"
        self.backbone = DilatedResNet(backbone, in_channels) if big else SmallEncoderDecoder(in_channels)
        channels = self.backbone.out_channels
        self.heads = nn.ModuleList(
            dense_head(t, channels, big) if t.is_dense else nn.Sequential(
                nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, CLASS_WIDTH), nn.ELU(),
                nn.Linear(CLASS_WIDTH, t.output_dim))
            for t in self.tasks)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Shared feature map (B, C, ≈H/s, ≈W/s) of images in [0, 1]; remembers H×W for `heads_forward`."""
        self.output_size = tuple(x.shape[-2:])
        return self.backbone((x - 0.5) / 0.5)

    def heads_forward(self, rep: torch.Tensor) -> dict:
        """Outputs at the size of the images `features` saw last (any H×W, not only multiples of 8)."""
        scale = self.backbone.scale
        size = self.output_size or (rep.shape[-2] * scale, rep.shape[-1] * scale)
        out = {}
        for task, head in zip(self.tasks, self.heads):
            y = head(rep)
            if task.is_dense:
                y = F.interpolate(y, size=size, mode="bilinear", align_corners=False)
            out[task.name] = y.squeeze(1) if not task.is_dense and task.output_dim == 1 else y
        return out

    def forward(self, x: torch.Tensor) -> dict:
        return self.heads_forward(self.features(x))

    def shared_parameters(self) -> list:
        return list(self.backbone.parameters())

    def task_parameters(self) -> list:
        return list(self.heads.parameters())


def start_depth_heads(model: nn.Module, depths: dict) -> None:
    """Set the output bias of each depth head ({task: metres}) to a depth, the train mean: "init well"
    for a regression head. A zero-initialised L1 head trained with Adam moves about lr per step, so it
    needs thousands of steps to reach metres (CPU budgets have hundreds); starting at the image-blind
    predictor, what remains to learn is what the image tells."""
    for net in getattr(model, "nets", [model]):  # STL: one net per task
        for task, head in zip(net.tasks, net.heads):
            if task.name in depths:
                last = [m for m in head.modules() if isinstance(m, nn.Conv2d)][-1]
                with torch.no_grad():
                    last.bias.fill_(float(depths[task.name]))
