"""``separable``: depthwise k x k conv followed by a full 1x1 conv (Chollet 2017, "Xception";
Howard et al. 2017, "MobileNets"). The common design every compressed method here builds on."""

from __future__ import annotations

import torch
import torch.nn as nn

from ._common import SeparableConv, depthwise_macs, depthwise_params, pointwise_hw, pointwise_macs, require_plain
from .registry import ConvSpec, Method, register_method


class SeparableFullConv(SeparableConv):
    """Depthwise k x k (stride/padding/dilation of the original) then a dense 1x1 in -> out."""

    def __init__(self, spec: ConvSpec) -> None:
        super().__init__("separable", spec, None)
        self.pw = nn.Conv2d(spec.in_channels, spec.out_channels, 1, bias=spec.bias)

    def pointwise(self, x: torch.Tensor) -> torch.Tensor:
        return self.pw(x)


def build(spec: ConvSpec, hp: None = None) -> SeparableFullConv:
    """Depthwise + full pointwise (``hp`` must be None); for a 1x1 conv this is the conv itself."""
    require_plain(spec, "separable")
    return SeparableFullConv(spec)


def params(spec: ConvSpec, hp: None = None, **options) -> int:
    """in*kh*kw (depthwise, k > 1 only) + in*out (+ out bias)."""
    return depthwise_params(spec) + spec.in_channels * spec.out_channels + (spec.out_channels if spec.bias else 0)


def macs(spec: ConvSpec, hp: None, in_hw: tuple[int, int], **options) -> int:
    """Depthwise out_h*out_w*in*kh*kw + pointwise out_h*out_w*in*out."""
    return depthwise_macs(spec, in_hw) + pointwise_macs(spec.in_channels, spec.out_channels, pointwise_hw(spec, in_hw))


register_method(Method(
    name="separable",
    description="depthwise k x k conv + full 1x1 conv",
    build=build, params=params, macs=macs, hp=None,
    paper="Chollet 2017 (Xception); Howard et al. 2017 (MobileNets)",
))
