"""The DARTS evaluation network for CIFAR (Liu, Simonyan & Yang, "DARTS: Differentiable
Architecture Search", ICLR 2019), cell DARTS_V2, as in the authors' ``model.py``.

A 3x3 stem with 3C channels, ``layers`` cells (reduction cells at 1/3 and 2/3 of the depth
double the channels and halve the resolution), an optional auxiliary classifier after the
second reduction cell, global average pooling and a linear layer. Each cell has four
nodes, each the sum of two ops of earlier states, and outputs the concatenation of its
four nodes (4C channels). Drop-path (probability ``model.drop_path_prob``, set by the
trainer each epoch) zeroes whole samples of every non-identity op in training mode.
C=36, 20 layers: 3,349,342 parameters without the auxiliary head (the paper's 3.3M),
3,825,768 with it (10 classes).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn as nn

from .darts_ops import OPS, FactorizedReduce, Identity, ReLUConvBN, drop_path
from .registry import register_model


class Genotype(NamedTuple):
    """A DARTS cell: (op name, input state index) pairs, two per node, and the concatenated nodes."""

    normal: list[tuple[str, int]]
    normal_concat: list[int]
    reduce: list[tuple[str, int]]
    reduce_concat: list[int]


# DARTS_V2 (second-order search), copied from the authors' genotypes.py
# (github.com/quark0/darts, cnn/genotypes.py). States 0 and 1 are the two cell inputs
# (outputs of the cell two back and one back); state i+2 is node i.
DARTS_V2 = Genotype(
    normal=[("sep_conv_3x3", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("sep_conv_3x3", 1),
            ("sep_conv_3x3", 1), ("skip_connect", 0), ("skip_connect", 0), ("dil_conv_3x3", 2)],
    normal_concat=[2, 3, 4, 5],
    reduce=[("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 1),
            ("max_pool_3x3", 0), ("skip_connect", 2), ("skip_connect", 2), ("max_pool_3x3", 1)],
    reduce_concat=[2, 3, 4, 5],
)

GENOTYPES: dict[str, Genotype] = {"DARTS_V2": DARTS_V2}


class Cell(nn.Module):
    """One DARTS cell: preprocess both inputs to C channels, build the nodes, concatenate.

    ``forward(s0, s1, drop_prob)``: s0 (N, C_prev_prev, ...), s1 (N, C_prev, H, W) ->
    (N, len(concat) * C, H', W') with H' = H/2 in a reduction cell.
    """

    def __init__(self, genotype: Genotype, c_prev_prev: int, c_prev: int, c: int, reduction: bool,
                 reduction_prev: bool) -> None:
        super().__init__()
        # After a reduction cell, s0 has twice the resolution of s1: reduce it too.
        self.preprocess0: nn.Module = (FactorizedReduce(c_prev_prev, c) if reduction_prev
                                       else ReLUConvBN(c_prev_prev, c, 1, 1, 0))
        self.preprocess1 = ReLUConvBN(c_prev, c, 1, 1, 0)
        pairs, concat = (genotype.reduce, genotype.reduce_concat) if reduction else (genotype.normal,
                                                                                     genotype.normal_concat)
        self.reduction = reduction
        self.indices = [index for _, index in pairs]
        self.concat = list(concat)
        self.multiplier = len(concat)
        # Only ops reading a cell input (index 0 or 1) are strided in a reduction cell.
        self.ops = nn.ModuleList(
            OPS[name](c, 2 if reduction and index < 2 else 1) for name, index in pairs
        )

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, drop_prob: float = 0.0) -> torch.Tensor:
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        for i in range(len(self.ops) // 2):
            h = []
            for j in (2 * i, 2 * i + 1):
                op = self.ops[j]
                out = op(states[self.indices[j]])
                if self.training and drop_prob > 0.0 and not isinstance(op, Identity):
                    out = drop_path(out, drop_prob)
                h.append(out)
            states.append(h[0] + h[1])
        return torch.cat([states[i] for i in self.concat], dim=1)


class AuxiliaryHeadCIFAR(nn.Module):
    """The auxiliary classifier on an 8x8 feature map: ReLU, 5x5/3 avg-pool to 2x2,
    1x1 conv 128, 2x2 conv 768, linear. Input (N, C, 8, 8); output (N, num_classes)."""

    def __init__(self, channels: int, num_classes: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.ReLU(inplace=False),  # the original is in place; out of place computes the same here
            nn.AvgPool2d(5, stride=3, padding=0, count_include_pad=False),
            nn.Conv2d(channels, 128, 1, bias=False),
            nn.BatchNorm2d(128),
            nn.ReLU(inplace=True),
            nn.Conv2d(128, 768, 2, bias=False),
            nn.BatchNorm2d(768),
            nn.ReLU(inplace=True),
        )
        self.classifier = nn.Linear(768, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


class NetworkCIFAR(nn.Module):
    """The DARTS evaluation network for 32x32 inputs.

    Input (N, in_channels, H, W); output (N, num_classes), or (logits, aux_logits) in
    training mode when built with ``auxiliary=True``.
    Attention-transfer taps (``tap_names``): the cell just before each of the two reduction
    cells and the final cell (4C x H x W, 8C x H/2, 16C x H/4; e.g. ``cells.5``,
    ``cells.12``, ``cells.19`` for 20 layers).
    ``training_only_modules`` names the auxiliary head: counts and budgets are of the network
    evaluated at test time (3,349,342 parameters at C=36, 20 layers, as the paper's 3.3M).
    """

    def __init__(self, c: int = 36, num_classes: int = 10, layers: int = 20, auxiliary: bool = True,
                 genotype: Genotype = DARTS_V2, in_channels: int = 3, stem_multiplier: int = 3) -> None:
        super().__init__()
        if layers < 3:
            raise ValueError(f"DARTS needs at least 3 cells (two of them reduction cells), got {layers}")
        self.layers = layers
        self.auxiliary = auxiliary
        self.drop_path_prob = 0.0
        reductions = (layers // 3, 2 * layers // 3)
        self.aux_position = 2 * layers // 3
        c_curr = stem_multiplier * c
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, c_curr, 3, padding=1, bias=False),
            nn.BatchNorm2d(c_curr),
        )
        c_prev_prev, c_prev, c_curr = c_curr, c_curr, c
        self.cells = nn.ModuleList()
        reduction_prev = False
        c_aux = c_prev
        for i in range(layers):
            reduction = i in reductions
            if reduction:
                c_curr *= 2
            cell = Cell(genotype, c_prev_prev, c_prev, c_curr, reduction, reduction_prev)
            self.cells.append(cell)
            reduction_prev = reduction
            c_prev_prev, c_prev = c_prev, cell.multiplier * c_curr
            if i == self.aux_position:
                c_aux = c_prev
        self.tap_names = tuple(f"cells.{i - 1}" for i in reductions) + (f"cells.{layers - 1}",)
        # runs in training only: outside params, budgets and eval mult-adds (lowrank.count)
        self.training_only_modules = {"auxiliary_head": "auxiliary head"} if auxiliary else {}
        if auxiliary:
            self.auxiliary_head = AuxiliaryHeadCIFAR(c_aux, num_classes)
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_prev, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        logits_aux = None
        s0 = s1 = self.stem(x)
        for i, cell in enumerate(self.cells):
            s0, s1 = s1, cell(s0, s1, self.drop_path_prob)
            if i == self.aux_position and self.auxiliary and self.training:
                logits_aux = self.auxiliary_head(s1)
        logits = self.classifier(torch.flatten(self.global_pooling(s1), 1))
        if logits_aux is not None:
            return logits, logits_aux
        return logits


@register_model("darts")
def darts(num_classes: int = 10, in_channels: int = 3, C: int = 36, layers: int = 20, auxiliary: bool = True,
          genotype: str = "DARTS_V2") -> NetworkCIFAR:
    """DARTS_V2 evaluation network (C=36, 20 cells: 3.35M parameters without the auxiliary head)."""
    if genotype not in GENOTYPES:
        raise ValueError(f"unknown DARTS genotype {genotype!r}; known: {', '.join(sorted(GENOTYPES))}")
    return NetworkCIFAR(c=C, num_classes=num_classes, layers=layers, auxiliary=auxiliary,
                        genotype=GENOTYPES[genotype], in_channels=in_channels)
