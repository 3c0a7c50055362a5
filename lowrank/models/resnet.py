"""ResNet-18 and ResNet-50 for CIFAR (He et al., "Deep Residual Learning for Image
Recognition", CVPR 2016).

The CIFAR variants popularised by kuangliu/pytorch-cifar: a 3x3 stem with 64 channels and
no max-pool, four stages (64, 128, 256, 512 channels; stages 2-4 start with stride 2), a
1x1 conv + BN ``shortcut`` where a block changes shape, global average pooling and a
linear layer. ResNet-18 (two basic blocks per stage): 11,173,962 parameters for 10
classes. ResNet-50 (3, 4, 6, 3 bottleneck blocks, expansion 4): 23,520,842; its
``wide`` factor widens only the bottleneck's 3x3 convolutions (``wide=2`` is the
torchvision/WRN-50-2 construction; Go Wide, Then Narrow's teacher uses 4), so teacher and
student stages output the same widths and layer-wise imitation needs no adapters.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .registry import register_model


def projection_shortcut(in_channels: int, out_channels: int, stride: int) -> nn.Sequential:
    """Identity (an empty Sequential) when shapes match, else 1x1 conv + BN, named
    ``shortcut`` by the blocks so the substitution rule ``@shortcut`` keeps it dense."""
    if stride == 1 and in_channels == out_channels:
        return nn.Sequential()
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                         nn.BatchNorm2d(out_channels))


class BasicBlock(nn.Module):
    """conv3x3(stride)-BN-ReLU-conv3x3-BN, plus the shortcut, then ReLU.

    Input (N, in_channels, H, W); output (N, out_channels, H/stride, W/stride).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut = projection_shortcut(in_channels, out_channels, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


def add_bottleneck_layers(block: nn.Module, in_channels: int, inner: int, out_channels: int, stride: int) -> None:
    """The bottleneck's layers, in this order (its state-dict order, torchvision's too): conv1 1x1
    to ``inner``, bn1, conv2 3x3 (``stride``), bn2, conv3 1x1 to ``out_channels``, bn3."""
    block.conv1 = nn.Conv2d(in_channels, inner, 1, bias=False)
    block.bn1 = nn.BatchNorm2d(inner)
    block.conv2 = nn.Conv2d(inner, inner, 3, stride=stride, padding=1, bias=False)
    block.bn2 = nn.BatchNorm2d(inner)
    block.conv3 = nn.Conv2d(inner, out_channels, 1, bias=False)
    block.bn3 = nn.BatchNorm2d(out_channels)


class Bottleneck(nn.Module):
    """conv1x1-BN-ReLU-conv3x3(stride)-BN-ReLU-conv1x1-BN, plus the shortcut, then ReLU.

    Input (N, in_channels, H, W); output (N, 4 * planes, H/stride, W/stride); the inner
    width is ``planes * wide``.
    """

    expansion = 4

    def __init__(self, in_channels: int, planes: int, stride: int = 1, wide: float = 1.0) -> None:
        super().__init__()
        inner, out_channels = max(1, int(round(planes * wide))), planes * self.expansion
        add_bottleneck_layers(self, in_channels, inner, out_channels, stride)
        self.shortcut = projection_shortcut(in_channels, out_channels, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet for 32x32 inputs; ``blocks`` per stage, e.g. (2, 2, 2, 2) basic blocks.

    Input (N, in_channels, H, W); output (N, num_classes).
    Attention-transfer taps: the output of each stage (``layer1`` .. ``layer4``: 64 x H x W,
    128 x H/2, 256 x H/4, 512 x H/8 at ``width`` 64, times 4 with bottleneck blocks).
    """

    tap_names = ("layer1", "layer2", "layer3", "layer4")

    def __init__(self, blocks: tuple[int, ...] = (2, 2, 2, 2), num_classes: int = 10, in_channels: int = 3,
                 width: int = 64, bottleneck: bool = False, wide: float = 1.0) -> None:
        super().__init__()
        if len(blocks) != 4:
            raise ValueError(f"blocks must give four stages, got {blocks}")
        planes = [width, 2 * width, 4 * width, 8 * width]
        expansion = Bottleneck.expansion if bottleneck else 1
        widths = [p * expansion for p in planes]
        self.conv1 = nn.Conv2d(in_channels, width, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        stages = []
        current = width
        for i, (count, out_channels) in enumerate(zip(blocks, widths)):
            stride = 1 if i == 0 else 2
            layers: list[nn.Module] = []
            for j in range(count):
                s = stride if j == 0 else 1
                layers.append(Bottleneck(current, planes[i], s, wide) if bottleneck
                              else BasicBlock(current, out_channels, s))
                current = out_channels
            stages.append(nn.Sequential(*layers))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(widths[3], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.linear(torch.flatten(self.pool(x), 1))


@register_model("resnet18")
def resnet18(num_classes: int = 10, in_channels: int = 3, width: int = 64) -> CifarResNet:
    """CIFAR ResNet-18 (11.17M parameters for 10 classes at width 64)."""
    return CifarResNet((2, 2, 2, 2), num_classes=num_classes, in_channels=in_channels, width=width)


@register_model("resnet50")
def resnet50(num_classes: int = 10, in_channels: int = 3, width: int = 64, wide: float = 1.0) -> CifarResNet:
    """CIFAR ResNet-50 (23.52M parameters for 10 classes at width 64); ``width`` scales every
    channel, ``wide`` only the bottleneck 3x3 convolutions (Go Wide's teacher: wide=4)."""
    return CifarResNet((3, 4, 6, 3), num_classes=num_classes, in_channels=in_channels, width=width,
                       bottleneck=True, wide=wide)
