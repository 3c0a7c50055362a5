"""Pieces shared by every substitute method: the module base class and the separable helpers.

Every built substitute is a :class:`SubstituteConv`; the counter treats one as a leaf, asks it
for ``macs(in_hw)`` and asks its registered :class:`~lowrank.methods.registry.Method` for the
parameter count. The separable design (a k x k depthwise conv with the original stride,
padding and dilation, followed by a compressed 1x1) is built from :func:`depthwise`.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from ._collapsed import CollapsibleLinear
from .registry import ConvSpec, get_method


class SubstituteConv(nn.Module):
    """Base class of a built substitute: knows its method name, spec, hyperparameter and options.

    Subclasses implement ``forward`` with ``nn.Conv2d``'s shapes: (B, in, H, W) -> (B, out, H', W').
    """

    def __init__(self, method_name: str, spec: ConvSpec, hp: Any, options: dict | None = None) -> None:
        super().__init__()
        self.method_name = method_name
        self.spec = spec
        self.hp = hp
        self.options = dict(options or {})

    def macs(self, in_hw: tuple[int, int]) -> int:
        """Analytic mult-adds for one image of spatial size ``in_hw`` (the method's declaration)."""
        return int(get_method(self.method_name).macs(self.spec, self.hp, tuple(in_hw), **self.options))

    def train_macs(self, x: torch.Tensor) -> int:
        """Mult-adds one training forward on the whole batch ``x`` executes (``lowrank count --train``):
        the declared per-image figure per image, unless a layer also pays a per-forward build."""
        return x.shape[0] * self.macs(tuple(x.shape[-2:]))

    def extra_repr(self) -> str:
        return f"method={self.method_name}, hp={self.hp}, in={self.spec.in_channels}, out={self.spec.out_channels}"


def has_spatial(spec: ConvSpec) -> bool:
    """True when the conv has a spatial kernel (k > 1 in some dimension), i.e. needs a depthwise stage."""
    return tuple(spec.kernel_size) != (1, 1)


def depthwise(spec: ConvSpec) -> nn.Conv2d:
    """The k x k depthwise conv (in -> in, groups=in) with the original stride/padding/dilation, no bias."""
    return nn.Conv2d(spec.in_channels, spec.in_channels, spec.kernel_size, spec.stride,
                     spec.padding, spec.dilation, groups=spec.in_channels, bias=False)


def depthwise_params(spec: ConvSpec) -> int:
    """Parameters of :func:`depthwise` (0 for a 1x1 conv, which gets no depthwise stage)."""
    kh, kw = spec.kernel_size
    return spec.in_channels * kh * kw if has_spatial(spec) else 0


def depthwise_macs(spec: ConvSpec, in_hw: tuple[int, int]) -> int:
    """Mult-adds of :func:`depthwise` on one image: out_h*out_w*in*kh*kw (0 for a 1x1 conv)."""
    if not has_spatial(spec):
        return 0
    oh, ow = spec.out_hw(in_hw)
    kh, kw = spec.kernel_size
    return oh * ow * spec.in_channels * kh * kw


def pointwise_stride(spec: ConvSpec) -> tuple[int, int]:
    """Stride of the 1x1 stage: the original stride for a 1x1 conv, else 1 (the depthwise strides)."""
    return (1, 1) if has_spatial(spec) else tuple(spec.stride)


def pointwise_hw(spec: ConvSpec, in_hw: tuple[int, int]) -> tuple[int, int]:
    """Spatial size the 1x1 stage works at: the conv's output size (both designs end there)."""
    return tuple(spec.out_hw(in_hw))


def strided_input(x: torch.Tensor, spec: ConvSpec) -> torch.Tensor:
    """For a 1x1 conv with stride/padding: pad and subsample the input exactly as nn.Conv2d would."""
    if has_spatial(spec):
        return x
    ph, pw = spec.padding
    if ph or pw:
        x = F.pad(x, (pw, pw, ph, ph))
    sh, sw = spec.stride
    if (sh, sw) != (1, 1):
        x = x[:, :, ::sh, ::sw]
    return x


def pointwise_macs(in_ch: int, out_ch: int, hw: tuple[int, int], groups: int = 1) -> int:
    """Mult-adds of a 1x1 conv in -> out (with ``groups``) at spatial size hw."""
    return hw[0] * hw[1] * out_ch * (in_ch // groups)


def conv_macs(spec: ConvSpec, in_hw: tuple[int, int]) -> int:
    """Mult-adds of the plain conv: out_h*out_w*out*(in/groups)*kh*kw (bias not counted)."""
    oh, ow = spec.out_hw(in_hw)
    kh, kw = spec.kernel_size
    return oh * ow * spec.out_channels * (spec.in_channels // spec.groups) * kh * kw


def require_plain(spec: ConvSpec, name: str) -> None:
    """Compressed methods replace ordinary (groups=1) convolutions only; say so clearly otherwise."""
    if spec.groups != 1:
        raise ValueError(f"method {name!r} replaces groups=1 convolutions; got groups={spec.groups}")


class SeparableConv(SubstituteConv):
    """A substitute in the separable design: k x k depthwise (if k > 1) then a 1x1 stage ``pointwise``.

    For a 1x1 conv there is no depthwise stage and the input is padded/subsampled exactly as the
    strided 1x1 conv would, so ``pointwise`` always runs at the output resolution with stride 1.
    """

    def __init__(self, method_name: str, spec: ConvSpec, hp: Any, options: dict | None = None) -> None:
        super().__init__(method_name, spec, hp, options)
        self.depthwise = depthwise(spec) if has_spatial(spec) else None

    def spatial(self, x: torch.Tensor) -> torch.Tensor:
        """The spatial stage: depthwise k x k conv, or the strided 1x1's subsampling."""
        return self.depthwise(x) if self.depthwise is not None else strided_input(x, self.spec)

    def pointwise(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        """The 1x1 stage at the output resolution; each method defines it."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.spatial(x))

    def train_macs(self, x: torch.Tensor) -> int:
        """As :meth:`SubstituteConv.train_macs`; a collapsible 1x1 stage says what its path executes
        on this many positions (a matrix build per forward on the collapsed path)."""
        core = next((m for m in self.children() if isinstance(m, CollapsibleLinear)), None)
        if core is None:
            return super().train_macs(x)
        in_hw = tuple(x.shape[-2:])
        oh, ow = pointwise_hw(self.spec, in_hw)
        return x.shape[0] * depthwise_macs(self.spec, in_hw) + core.batch_macs(x.shape[0] * oh * ow)
