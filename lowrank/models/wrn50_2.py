"""WRN-50-2 for ImageNet (Zagoruyko & Komodakis, "Wide Residual Networks", BMVC 2016).

The ImageNet WRN-50-2 is a ResNet-50 whose bottleneck 3x3 convolutions are twice as wide
(research notes, 23 Nov 2018: "a ResNet-50, but with all channels doubled" inside the
bottleneck): torchvision's ``wide_resnet50_2``, 68,883,240 parameters for 1000 classes.
Built here with torchvision's module names and initialisation, so its state dicts load
either way (tests check names, shapes and outputs against torchvision), without importing
torchvision: that import (1.6 s, most of it torch._dynamo pulled in by ``torchvision.ops``)
was most of ``lowrank count`` and of the first budget solve of this preset. Pretrained
weights come only from a local file in torchvision's state-dict format; nothing is ever
downloaded. Its 1x1 projection shortcuts are the ``downsample`` modules.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from .registry import register_model
from .resnet import add_bottleneck_layers

TAP_NAMES = ("layer1", "layer2", "layer3", "layer4")
BLOCKS = (3, 4, 6, 3)  # ResNet-50's bottleneck blocks per stage
WIDTH_FACTOR = 2  # torchvision's width_per_group=128 over the base 64


class WideBottleneck(nn.Module):
    """torchvision's ``Bottleneck``: 1x1 (planes*2) - 3x3 (stride) - 1x1 (planes*4), BN after
    each, ReLU, the ``downsample`` projection where the shape changes, ReLU after the sum."""

    expansion = 4

    def __init__(self, in_channels: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        inner, out_channels = planes * WIDTH_FACTOR, planes * self.expansion
        add_bottleneck_layers(self, in_channels, inner, out_channels, stride)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                                            nn.BatchNorm2d(out_channels))
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class WideResNet50(nn.Module):
    """The ImageNet network: 7x7/2 stem, 3x3/2 max-pool, four stages of wide bottlenecks
    (256, 512, 1024, 2048 channels out; stages 2-4 start with stride 2), global average pool, fc.

    Input (N, in_channels, H, W); output (N, num_classes).
    """

    tap_names = TAP_NAMES

    def __init__(self, num_classes: int = 1000, in_channels: int = 3) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        current, stages = 64, []
        for index, (count, planes) in enumerate(zip(BLOCKS, (64, 128, 256, 512))):
            blocks = []
            for block in range(count):
                blocks.append(WideBottleneck(current, planes, 2 if index and not block else 1))
                current = planes * WideBottleneck.expansion
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(current, num_classes)
        for module in self.modules():  # torchvision's ResNet initialisation (zero_init_residual=False)
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.constant_(module.weight, 1)
                nn.init.constant_(module.bias, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


@register_model("wrn50_2")
def wrn50_2(num_classes: int = 1000, in_channels: int = 3, weights_path: str | None = None) -> nn.Module:
    """WRN-50-2 as torchvision's ``wide_resnet50_2`` (random init, or ``weights_path``: a local
    state dict in torchvision's format).

    Attention-transfer taps: the output of each stage, ``layer1`` .. ``layer4``
    (256, 512, 1024, 2048 channels at H/4 .. H/32).
    """
    model = WideResNet50(num_classes=num_classes, in_channels=in_channels)
    if weights_path is not None:
        from ..distill import load_weights

        # On the meta device (counting, budget solving) there is nothing to fill: only
        # check that the file is there, without reading its 270 MB.
        load_weights(model, weights_path, what="WRN-50-2 weights",
                     check_only=next(model.parameters()).is_meta)
    return model
