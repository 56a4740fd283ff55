"""Feature extractors for the victim networks: torchvision backbones (random init), the CIFAR ResNets
(resnet8, resnet20) built from torchvision's BasicBlock, and a small CNN.

Every builder returns `(module, feature_dim)`; `module(x)` maps (B, C, H, W) to (B, feature_dim).
Weights are never downloaded (`weights=None`). Inputs under 96 px get a CIFAR-style 3×3 stride-1
stem without max-pool, as is usual for 32/64-px images.
"""

from __future__ import annotations

import torch
from torch import nn

from mtlue.errors import ConfigError

SMALL_INPUT_PX = 96  # below this a 7×7/2 stem + max-pool throws away most of the image


class PooledBlocks(nn.Module):
    """A stack of layers (`blocks`) ending in `out_features` channels, then global average pooling."""

    def __init__(self, layers: list, out_features: int):
        super().__init__()
        self.blocks = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.out_features = out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.blocks(x)).flatten(1)


class SmallCNN(PooledBlocks):
    """Three conv–BN–ReLU–max-pool blocks (32, 64, 128 channels) and global average pooling."""

    def __init__(self, in_channels: int = 3, widths: tuple = (32, 64, 128)):
        layers, channels = [], in_channels
        for width in widths:
            layers += [nn.Conv2d(channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True), nn.MaxPool2d(2)]
            channels = width
        super().__init__(layers, channels)


class PooledFeatures(nn.Module):
    """A conv feature stack followed by ReLU (optional) and global average pooling."""

    def __init__(self, features: nn.Module, relu: bool = False):
        super().__init__()
        self.features = features
        self.relu = relu
        self.pool = nn.AdaptiveAvgPool2d(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        if self.relu:
            x = torch.relu(x)
        return self.pool(x).flatten(1)


class CifarResNet(PooledBlocks):
    """The CIFAR ResNet of He et al. (2016, section 4.2): 3×3 stem, three stages of n torchvision
    BasicBlocks at 16/32/64 channels (strides 1, 2, 2), global average pooling; depth = 6n + 2."""

    def __init__(self, depth: int, in_channels: int = 3, widths: tuple = (16, 32, 64)):
        from torchvision.models.resnet import BasicBlock

        if (depth - 2) % 6:
            raise ConfigError(f"CIFAR ResNet depth {depth}: must be 6n + 2 (8, 14, 20, 32, …)")
        blocks_per_stage = (depth - 2) // 6
        layers = [nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False), nn.BatchNorm2d(widths[0]),
                  nn.ReLU(inplace=True)]
        channels = widths[0]
        for stage, width in enumerate(widths):
            for block in range(blocks_per_stage):
                stride = 2 if stage > 0 and block == 0 else 1
                downsample = None
                if stride != 1 or channels != width:
                    downsample = nn.Sequential(nn.Conv2d(channels, width, 1, stride=stride, bias=False),
                                               nn.BatchNorm2d(width))
                layers.append(BasicBlock(channels, width, stride=stride, downsample=downsample))
                channels = width
        super().__init__(layers, channels)


def _resnet(name: str, in_channels: int, image_size: int, small_input_stem: bool = True):
    """A torchvision ResNet without weights; under SMALL_INPUT_PX a 3×3/1 stem without max-pool (the CIFAR
    variant) unless `small_input_stem` is False (the ImageNet 7×7/2 + max-pool stem: 16× fewer stem pixels,
    the variant a CPU can train in minutes)."""
    import torchvision

    net = getattr(torchvision.models, name)(weights=None)
    if image_size < SMALL_INPUT_PX and small_input_stem:
        net.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
        net.maxpool = nn.Identity()
    elif in_channels != 3:
        net.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
    dim = net.fc.in_features
    net.fc = nn.Identity()
    return net, dim


def _vgg16_bn(in_channels: int, image_size: int):
    import torchvision

    features = torchvision.models.vgg16_bn(weights=None).features
    layers = list(features)
    if in_channels != 3:
        layers[0] = nn.Conv2d(in_channels, 64, 3, padding=1)
    # Drop trailing max-pools that would shrink the map below 1 px (VGG halves it 5 times).
    pools = [i for i, layer in enumerate(layers) if isinstance(layer, nn.MaxPool2d)]
    while pools and image_size // (2 ** len(pools)) < 1:
        layers[pools.pop()] = nn.Identity()
    return PooledFeatures(nn.Sequential(*layers)), 512


def _densenet121(in_channels: int, image_size: int):
    import torchvision

    net = torchvision.models.densenet121(weights=None)
    if image_size < SMALL_INPUT_PX:
        net.features.conv0 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
        net.features.pool0 = nn.Identity()
    elif in_channels != 3:
        net.features.conv0 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
    return PooledFeatures(net.features, relu=True), net.classifier.in_features


def vit_patch_size(image_size: int) -> int:
    """Patch 16 from 128 px up, else 8 from 64 px, else 4 (keeps at least 8×8 tokens)."""
    for patch in (16, 8, 4):
        if image_size >= 8 * patch and image_size % patch == 0:
            return patch
    for patch in (4, 2, 1):
        if image_size % patch == 0:
            return patch
    return 1


def _vit_b_16(in_channels: int, image_size: int):
    from torchvision.models.vision_transformer import VisionTransformer

    patch = vit_patch_size(image_size)
    net = VisionTransformer(image_size=image_size, patch_size=patch, num_layers=12, num_heads=12, hidden_dim=768, mlp_dim=3072)
    if in_channels != 3:
        net.conv_proj = nn.Conv2d(in_channels, 768, patch, stride=patch)
    net.heads = nn.Identity()
    return net, 768


def _small_cnn(in_channels: int, image_size: int):
    net = SmallCNN(in_channels)
    return net, net.out_features


def _cifar_resnet(depth: int):
    def build(in_channels: int, image_size: int):
        net = CifarResNet(depth, in_channels)
        return net, net.out_features

    return build


# name -> builder(in_channels, image_size) -> (module, feature_dim); adding a backbone is one line here
BUILDERS = {
    "resnet18": lambda in_channels, image_size: _resnet("resnet18", in_channels, image_size),
    "resnet50": lambda in_channels, image_size: _resnet("resnet50", in_channels, image_size),
    "resnet18_imagenet_stem": lambda in_channels, image_size: _resnet("resnet18", in_channels, image_size, False),
    "vgg16_bn": _vgg16_bn,
    "densenet121": _densenet121,
    "vit_b_16": _vit_b_16,
    "small_cnn": _small_cnn,
    "resnet8": _cifar_resnet(8),
    "resnet20": _cifar_resnet(20),
}
ALIASES = {"vit_b": "vit_b_16"}
BACKBONES = tuple(BUILDERS)


def build_backbone(name: str, in_channels: int = 3, image_size: int = 32) -> tuple[nn.Module, int]:
    """Feature extractor `name` for (in_channels, image_size, image_size) inputs -> (module, feature_dim)."""
    builder = BUILDERS.get(ALIASES.get(name, name))
    if builder is None:
        raise ConfigError(f"--backbone {name!r}: unknown backbone (one of {', '.join(BACKBONES)})")
    return builder(in_channels, image_size)
