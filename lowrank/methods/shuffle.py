"""``shuffle``: a ShuffleNet-style unit (Zhang et al. 2018, "ShuffleNet").

grouped 1x1 in -> mid (g groups), channel shuffle, depthwise k x k on mid (stride/padding/
dilation of the original; skipped when k = 1, where the stride goes to the first 1x1),
grouped 1x1 mid -> out (g groups); no nonlinearity or normalisation inside. ``mid = out``.

The hyperparameter is the number of groups, so MORE hp means FEWER parameters: it is declared
with ``direction=-1``. The groups used are the largest divisor of gcd(in, out) not above hp,
so both grouped convs are valid and the count is monotone (non-increasing) in hp.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from ._common import SubstituteConv, has_spatial, pointwise_hw, require_plain, strided_input
from .registry import ConvSpec, HyperParam, Method, register_method

HP = HyperParam("groups", int, low=1, high=64, default=4, direction=-1,
                description="groups of both 1x1 convs (more groups, fewer parameters)")


def effective_groups(spec: ConvSpec, hp: int) -> int:
    """The largest divisor of gcd(in, out) that is <= hp."""
    common = math.gcd(spec.in_channels, spec.out_channels)
    return max(d for d in range(1, min(int(hp), common) + 1) if common % d == 0)


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """ShuffleNet's channel shuffle: (B, g*c, H, W) -> view (B, g, c) -> transpose -> flatten."""
    b, ch, h, w = x.shape
    return x.view(b, groups, ch // groups, h, w).transpose(1, 2).reshape(b, ch, h, w)


class ShuffleConv(SubstituteConv):
    """Grouped 1x1 -> channel shuffle -> depthwise k x k -> grouped 1x1 (mid = out)."""

    def __init__(self, spec: ConvSpec, hp: int) -> None:
        super().__init__("shuffle", spec, hp)
        g = self.groups = effective_groups(spec, hp)
        mid = spec.out_channels
        self.gconv1 = nn.Conv2d(spec.in_channels, mid, 1, groups=g, bias=False)
        self.depthwise = (nn.Conv2d(mid, mid, spec.kernel_size, spec.stride, spec.padding, spec.dilation,
                                    groups=mid, bias=False) if has_spatial(spec) else None)
        self.gconv2 = nn.Conv2d(mid, spec.out_channels, 1, groups=g, bias=spec.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.depthwise is None:
            x = strided_input(x, self.spec)
        x = channel_shuffle(self.gconv1(x), self.groups)
        if self.depthwise is not None:
            x = self.depthwise(x)
        return self.gconv2(x)


def build(spec: ConvSpec, hp: int = HP.default) -> ShuffleConv:
    """A ShuffleNet-style unit with ``hp`` groups (reduced to divide the channels)."""
    require_plain(spec, "shuffle")
    return ShuffleConv(spec, HP.validate(hp))


def params(spec: ConvSpec, hp: int, **options) -> int:
    """(in*mid + mid*out)/g + mid*kh*kw (k > 1) (+ out bias), mid = out."""
    g = effective_groups(spec, hp)
    mid, (kh, kw) = spec.out_channels, spec.kernel_size
    dw = mid * kh * kw if has_spatial(spec) else 0
    return (spec.in_channels * mid + mid * spec.out_channels) // g + dw + (spec.out_channels if spec.bias else 0)


def macs(spec: ConvSpec, hp: int, in_hw: tuple[int, int], **options) -> int:
    """First 1x1 at the input size (k > 1) or output size (k = 1), depthwise and second 1x1 at the output size."""
    g = effective_groups(spec, hp)
    mid, (kh, kw) = spec.out_channels, spec.kernel_size
    oh, ow = pointwise_hw(spec, in_hw)
    ih, iw = in_hw if has_spatial(spec) else (oh, ow)
    first = ih * iw * mid * spec.in_channels // g
    dw = oh * ow * mid * kh * kw if has_spatial(spec) else 0
    return first + dw + oh * ow * spec.out_channels * mid // g


register_method(Method(
    name="shuffle",
    description="ShuffleNet unit: grouped 1x1, channel shuffle, depthwise k x k, grouped 1x1 (hp = groups)",
    build=build, params=params, macs=macs, hp=HP,
    paper="Zhang et al. 2018, ShuffleNet",
))
