"""``dense``: the plain convolution itself, as a substitute (the uncompressed reference point)."""

from __future__ import annotations

import torch
import torch.nn as nn

from ._common import SubstituteConv, conv_macs
from .registry import ConvSpec, Method, register_method


class DenseConv(SubstituteConv):
    """The original ``nn.Conv2d`` (any groups), wrapped so it counts like every other substitute."""

    def __init__(self, spec: ConvSpec) -> None:
        super().__init__("dense", spec, None)
        self.conv = nn.Conv2d(spec.in_channels, spec.out_channels, spec.kernel_size, spec.stride,
                              spec.padding, spec.dilation, spec.groups, spec.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def build(spec: ConvSpec, hp: None = None) -> DenseConv:
    """A plain conv with the spec's shape (``hp`` must be None)."""
    return DenseConv(spec)


def params(spec: ConvSpec, hp: None = None, **options) -> int:
    """out*(in/groups)*kh*kw (+ out for the bias)."""
    return spec.dense_params


def macs(spec: ConvSpec, hp: None, in_hw: tuple[int, int], **options) -> int:
    """out_h*out_w*out*(in/groups)*kh*kw."""
    return conv_macs(spec, in_hw)


register_method(Method(
    name="dense",
    description="the plain convolution (uncompressed reference)",
    build=build, params=params, macs=macs, hp=None,
))
