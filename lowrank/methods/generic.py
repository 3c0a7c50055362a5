"""``generic``: a low-rank bottleneck, the 1x1 weight factored as (out x r)(r x in).

Separable design: for k > 1 a depthwise k x k conv comes first, then 1x1 in -> r, 1x1 r -> out
(no nonlinearity between, so the pair is a rank-r matrix). The rank is
``r = max(1, floor(hp * min(in, out) + 0.5))`` — round half up, so the count is monotone in hp.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from ._common import SeparableConv, depthwise_macs, depthwise_params, pointwise_hw, require_plain
from .registry import ConvSpec, HyperParam, Method, register_method

HP = HyperParam("rank_fraction", float, low=1e-3, high=1.0, default=0.25, direction=1,
                description="bottleneck rank as a fraction of min(in, out)")


def rank(spec: ConvSpec, hp: float) -> int:
    """The bottleneck width r = max(1, floor(hp*min(in, out) + 0.5))."""
    return max(1, math.floor(float(hp) * min(spec.in_channels, spec.out_channels) + 0.5))


class LowRankConv(SeparableConv):
    """Depthwise k x k (k > 1), then 1x1 in -> r and 1x1 r -> out (bias on the last)."""

    def __init__(self, spec: ConvSpec, hp: float) -> None:
        super().__init__("generic", spec, hp)
        r = rank(spec, hp)
        self.reduce = nn.Conv2d(spec.in_channels, r, 1, bias=False)
        self.expand = nn.Conv2d(r, spec.out_channels, 1, bias=spec.bias)

    def pointwise(self, x: torch.Tensor) -> torch.Tensor:
        return self.expand(self.reduce(x))


def build(spec: ConvSpec, hp: float = HP.default) -> LowRankConv:
    """A rank-r bottleneck replacing the conv ``spec``."""
    require_plain(spec, "generic")
    return LowRankConv(spec, HP.validate(hp))


def params(spec: ConvSpec, hp: float, **options) -> int:
    """in*kh*kw (k > 1) + r*(in + out) (+ out bias)."""
    r = rank(spec, hp)
    return depthwise_params(spec) + r * (spec.in_channels + spec.out_channels) + (spec.out_channels if spec.bias else 0)


def macs(spec: ConvSpec, hp: float, in_hw: tuple[int, int], **options) -> int:
    """Depthwise + out_h*out_w*r*(in + out)."""
    oh, ow = pointwise_hw(spec, in_hw)
    return depthwise_macs(spec, in_hw) + oh * ow * rank(spec, hp) * (spec.in_channels + spec.out_channels)


register_method(Method(
    name="generic",
    description="low-rank bottleneck: depthwise k x k + 1x1 in->r + 1x1 r->out, r = hp*min(in,out)",
    build=build, params=params, macs=macs, hp=HP,
    paper="Jaderberg et al. 2014; Sainath et al. 2013 (low-rank factorisation)",
))
