"""The ResNet-9 of the fast CIFAR-10 DAWNBench entry (David Page, Myrtle.ai, "How to train
your ResNet", 2018).

prep conv_bn(64); layer1 conv_bn(128) + max-pool + residual(conv_bn(128) x2); layer2
conv_bn(256) + max-pool; layer3 conv_bn(512) + max-pool + residual(conv_bn(512) x2);
global max-pool; linear 512 -> classes without bias; logits scaled by 0.125. conv_bn is
conv3x3 (no bias) - BN - ReLU. 6,573,120 parameters for 10 classes.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from .registry import register_model


def conv_bn(in_channels: int, out_channels: int) -> nn.Sequential:
    """3x3 convolution (no bias), batch norm, ReLU."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class Residual(nn.Module):
    """x + body(x), the identity residual of ResNet-9 (two conv_bn units)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.res1 = conv_bn(channels, channels)
        self.res2 = conv_bn(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.res2(self.res1(x))


class ResNet9(nn.Module):
    """The DAWNBench ResNet-9 at base width ``width`` (64 in the original).

    Input (N, in_channels, H, W) with H, W >= 8; output (N, num_classes), already
    multiplied by ``weight``. Attention-transfer taps: the output of each layer
    (``layer1`` 2w x H/2, ``layer2`` 4w x H/4, ``layer3`` 8w x H/8).
    """

    tap_names = ("layer1", "layer2", "layer3")

    def __init__(self, num_classes: int = 10, in_channels: int = 3, width: int = 64, weight: float = 0.125) -> None:
        super().__init__()
        w = width
        self.prep = conv_bn(in_channels, w)
        self.layer1 = nn.Sequential(conv_bn(w, 2 * w), nn.MaxPool2d(2), Residual(2 * w))
        self.layer2 = nn.Sequential(conv_bn(2 * w, 4 * w), nn.MaxPool2d(2))
        self.layer3 = nn.Sequential(conv_bn(4 * w, 8 * w), nn.MaxPool2d(2), Residual(8 * w))
        self.pool = nn.AdaptiveMaxPool2d(1)
        self.linear = nn.Linear(8 * w, num_classes, bias=False)
        # The fixed logit scale of the original (its "Mul(weight)"): it keeps the initial
        # softmax soft under the large learning rates of the DAWNBench schedule.
        self.weight = weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer3(self.layer2(self.layer1(self.prep(x))))
        return self.linear(torch.flatten(self.pool(x), 1)) * self.weight


@register_model("resnet9")
def resnet9(num_classes: int = 10, in_channels: int = 3, width: int = 64, weight: float = 0.125) -> ResNet9:
    """The DAWNBench CIFAR-10 ResNet-9 (6.57M parameters for 10 classes)."""
    return ResNet9(num_classes=num_classes, in_channels=in_channels, width=width, weight=weight)
