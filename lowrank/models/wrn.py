"""Wide residual networks for CIFAR (Zagoruyko & Komodakis, "Wide Residual Networks", BMVC 2016).

The pre-activation WRN-d-k: a 3x3 stem with 16 channels, three groups of ``(d - 4) / 6``
basic blocks (BN-ReLU-conv3x3, twice) with 16k, 32k and 64k channels, the second and
third group starting with stride 2, then BN-ReLU, global average pooling and a linear
layer. It follows the authors' PyTorch code (and the common ``WideResNet-pytorch``
port) exactly: convolutions without bias, a 1x1 ``shortcut`` convolution (no BN) when a
block changes width, applied to the block's pre-activated input. WRN-28-10 has
36,479,194 parameters and 5.2456e9 mult-adds at 32x32; WRN-40-2 has 2,243,546.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .registry import register_model


class WideBasicBlock(nn.Module):
    """BN-ReLU-conv3x3(stride)-BN-ReLU-[dropout]-conv3x3 plus the shortcut.

    Input (N, in_channels, H, W); output (N, out_channels, H/stride, W/stride). When the
    width changes, the shortcut is a 1x1 strided conv of the *pre-activated* input (as in
    the reference code), otherwise the identity of the raw input.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, dropout: float = 0.0) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1, bias=False)
        self.dropout = dropout
        self.shortcut: nn.Module | None = None
        if in_channels != out_channels or stride != 1:
            self.shortcut = nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        o = F.relu(self.bn1(x))
        y = self.conv1(o)
        y = F.relu(self.bn2(y))
        if self.dropout > 0:
            y = F.dropout(y, p=self.dropout, training=self.training)
        y = self.conv2(y)
        return y + (self.shortcut(o) if self.shortcut is not None else x)


class WideResNet(nn.Module):
    """WRN-depth-widen_factor for 32x32 inputs (any size divisible by 4 works).

    Input (N, in_channels, H, W); output (N, num_classes).
    Attention-transfer taps: the output of each of the three groups
    (16k x H x W, 32k x H/2 x W/2, 64k x H/4 x W/4).
    """

    tap_names = ("group1", "group2", "group3")

    def __init__(self, depth: int = 28, widen_factor: int = 10, num_classes: int = 10, in_channels: int = 3,
                 dropout: float = 0.0) -> None:
        super().__init__()
        if depth < 10 or (depth - 4) % 6 != 0:
            raise ValueError(f"WRN depth must be 6n+4 with n >= 1 (10, 16, 22, 28, 40, ...), got {depth}")
        n = (depth - 4) // 6
        widths = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.stem = nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False)
        self.group1 = self._group(widths[0], widths[1], n, 1, dropout)
        self.group2 = self._group(widths[1], widths[2], n, 2, dropout)
        self.group3 = self._group(widths[2], widths[3], n, 2, dropout)
        self.bn = nn.BatchNorm2d(widths[3])
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(widths[3], num_classes)
        self._init_weights()

    @staticmethod
    def _group(in_channels: int, out_channels: int, blocks: int, stride: int, dropout: float) -> nn.Sequential:
        return nn.Sequential(*[
            WideBasicBlock(in_channels if i == 0 else out_channels, out_channels, stride if i == 0 else 1, dropout)
            for i in range(blocks)
        ])

    def _init_weights(self) -> None:
        # The reference initialisation: He-normal (fan_out) convs, BN weight 1 / bias 0, zero linear bias.
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.group3(self.group2(self.group1(self.stem(x))))
        x = F.relu(self.bn(x))
        return self.fc(torch.flatten(self.pool(x), 1))


@register_model("wrn")
def wrn(num_classes: int = 10, in_channels: int = 3, depth: int = 28, widen_factor: int = 10,
        dropout: float = 0.0) -> WideResNet:
    """WRN-depth-widen_factor (WRN-28-10: 36.5M parameters; WRN-40-2: 2.2M)."""
    return WideResNet(depth=depth, widen_factor=widen_factor, num_classes=num_classes,
                      in_channels=in_channels, dropout=dropout)
