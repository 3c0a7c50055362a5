"""An MLP made only of ACDC layers (Moczulski et al. 2016; research notes 001, 2-17 Oct 2018).

The notes' MNIST check: flatten the image, propagate it through 32 ACDC layers with *no
fully connected layer*, keep the first 10 outputs as the logits; with Adam it reaches 97%
in 10 epochs. Each layer is a one-layer :class:`~lowrank.methods.acdc.StackedACDCLinear`
(``y = C^-1 D C A x + b`` on N = in_features channels), followed by a riffle shuffle and a
ReLU (a purely linear stack could not beat a linear classifier, about 92% on MNIST); the
last layer has neither. Parameters: ``depth * 3N`` (two diagonals and a bias per layer).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ..methods.acdc import StackedACDCLinear, riffle_permutation
from .registry import register_model


class ACDCMLP(nn.Module):
    """Flatten -> ``depth`` x [ACDC, riffle, ReLU] (none after the last) -> first ``num_classes``.

    Input (N, C, H, W) with C*H*W >= num_classes; output (N, num_classes).
    """

    tap_names = ()

    def __init__(self, in_features: int, num_classes: int = 10, depth: int = 32, relu: bool = True) -> None:
        super().__init__()
        if in_features < num_classes:
            raise ValueError(f"an ACDC MLP keeps num_classes of its in_features outputs: {in_features} < {num_classes}")
        self.num_classes, self.relu = num_classes, relu
        self.layers = nn.ModuleList(StackedACDCLinear(in_features, in_features, 1, bias=True) for _ in range(depth))
        self.register_buffer("riffle", riffle_permutation(in_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(x, 1)
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = x.index_select(1, self.riffle)
                x = torch.relu(x) if self.relu else x
        return x[:, :self.num_classes]


@register_model("acdc_mlp")
def acdc_mlp(num_classes: int = 10, in_channels: int = 1, image_size: int = 28, depth: int = 32,
             relu: bool = True) -> ACDCMLP:
    """``depth`` ACDC layers over the flattened image (notes 001: 32 layers on MNIST, 28x28)."""
    return ACDCMLP(in_channels * image_size * image_size, num_classes=num_classes, depth=depth, relu=relu)
