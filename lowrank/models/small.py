"""Small networks for MNIST and the 8x8 digits: a tiny convnet and an MLP.

The tiny convnet is the quickstart's network: big enough to show substitution on
3x3 convolutions, small enough to train in seconds on a CPU.
"""

from __future__ import annotations

import torch
import torch.nn as nn


def conv_bn_relu(in_channels: int, out_channels: int, stride: int = 1) -> nn.Sequential:
    """3x3 convolution, batch norm, ReLU: the unit the tiny convnet stacks."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class TinyConvNet(nn.Module):
    """stem conv -> two stages of two 3x3 convs (second stage strided) -> pool -> linear.

    Input (N, in_channels, H, W) with H, W >= 4; output (N, num_classes).
    Attention-transfer taps: the output of each stage.
    """

    tap_names = ("stage1", "stage2")

    def __init__(self, num_classes: int = 10, in_channels: int = 1, width: int = 32) -> None:
        super().__init__()
        self.stem = conv_bn_relu(in_channels, width)
        self.stage1 = nn.Sequential(conv_bn_relu(width, width), conv_bn_relu(width, width))
        self.stage2 = nn.Sequential(conv_bn_relu(width, 2 * width, stride=2), conv_bn_relu(2 * width, 2 * width))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(2 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stage2(self.stage1(self.stem(x)))
        return self.classifier(torch.flatten(self.pool(x), 1))


class MLP(nn.Module):
    """Flatten -> [Linear, ReLU] * len(hidden) -> Linear. Input any (N, ...) shape."""

    tap_names = ()

    def __init__(self, num_classes: int = 10, in_features: int = 64, hidden: tuple[int, ...] = (256, 256)) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_features
        for size in hidden:
            layers += [nn.Linear(width, size), nn.ReLU(inplace=True)]
            width = size
        layers.append(nn.Linear(width, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class LeNet5(nn.Module):
    """LeNet-5-Caffe as in Bayesian compression (Louizos et al. 2017): two conv + max-pool stages and
    two linear layers, no normalisation (every op between layers maps 0 to 0, so pruned channels can be
    removed exactly). 28x28 input with 5x5 kernels gives 20-50-800-500; 8x8 digits use 3x3, padding 1."""

    tap_names = ("features",)

    def __init__(self, num_classes: int = 10, in_channels: int = 1, image_size: int = 28, kernel: int = 5,
                 padding: int = 0, widths: tuple[int, int] = (20, 50), hidden: int = 500) -> None:
        super().__init__()
        size = (image_size + 2 * padding - kernel + 1) // 2
        size = (size + 2 * padding - kernel + 1) // 2
        if size < 1:
            raise ValueError(f"image_size {image_size} is too small for kernel {kernel} and padding {padding}")
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, widths[0], kernel, padding=padding), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(widths[0], widths[1], kernel, padding=padding), nn.ReLU(inplace=True), nn.MaxPool2d(2))
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(widths[1] * size * size, hidden),
                                        nn.ReLU(inplace=True), nn.Linear(hidden, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


from .registry import register_model  # noqa: E402  (after the classes, which tests import directly)


@register_model("tiny_convnet")
def tiny_convnet(num_classes: int = 10, in_channels: int = 1, width: int = 32) -> TinyConvNet:
    """The quickstart convnet (about 0.1M parameters at width 32)."""
    return TinyConvNet(num_classes=num_classes, in_channels=in_channels, width=width)


@register_model("mlp")
def mlp(num_classes: int = 10, in_channels: int = 1, image_size: int = 8,
        hidden: tuple[int, ...] | list[int] = (256, 256)) -> MLP:
    """A plain MLP over the flattened image."""
    return MLP(num_classes=num_classes, in_features=in_channels * image_size * image_size, hidden=tuple(hidden))


@register_model("lenet5")
def lenet5(num_classes: int = 10, in_channels: int = 1, image_size: int = 28, kernel: int = 5, padding: int = 0,
           widths: tuple[int, int] | list[int] = (20, 50), hidden: int = 500) -> LeNet5:
    """LeNet-5-Caffe (20-50-800-500 on 28x28); on 8x8 digits use kernel 3, padding 1."""
    return LeNet5(num_classes=num_classes, in_channels=in_channels, image_size=image_size, kernel=kernel,
                  padding=padding, widths=tuple(widths), hidden=hidden)
