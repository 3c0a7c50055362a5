"""The registry of substitute-convolution methods and the declaration each one makes.

A method is declared once with :func:`register_method` and is then usable everywhere
by name: the substitution pass, the counter and the budget solver use only the
declaration (build, params, macs, hyperparameter range and direction), never an
``if name == ...`` branch. Importing :mod:`lowrank.methods` registers every method.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

import torch.nn as nn

from ..registry import Registry


@dataclass(frozen=True)
class ConvSpec:
    """The shape of the dense ``nn.Conv2d`` a substitute replaces (all tuples are (h, w))."""

    in_channels: int
    out_channels: int
    kernel_size: tuple[int, int] = (1, 1)
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1
    bias: bool = False

    @classmethod
    def from_conv(cls, conv: nn.Conv2d) -> "ConvSpec":
        """The spec of an existing convolution (string padding such as 'same' is resolved)."""
        padding = conv.padding
        if isinstance(padding, str):
            if padding == "valid":
                padding = (0, 0)
            else:  # 'same' with stride 1: total padding dilation*(k-1), split evenly
                padding = tuple(d * (k - 1) // 2 for d, k in zip(conv.dilation, conv.kernel_size))
        return cls(conv.in_channels, conv.out_channels, tuple(conv.kernel_size), tuple(conv.stride),
                   tuple(padding), tuple(conv.dilation), conv.groups, conv.bias is not None)

    @property
    def dense_params(self) -> int:
        """Parameters of the plain convolution with this shape."""
        kh, kw = self.kernel_size
        weight = self.out_channels * (self.in_channels // self.groups) * kh * kw
        return weight + (self.out_channels if self.bias else 0)

    def out_hw(self, in_hw: tuple[int, int]) -> tuple[int, int]:
        """Output spatial size for an input of spatial size ``in_hw`` (PyTorch's formula)."""
        return tuple(
            (size + 2 * p - d * (k - 1) - 1) // s + 1
            for size, p, d, k, s in zip(in_hw, self.padding, self.dilation, self.kernel_size, self.stride)
        )


@dataclass(frozen=True)
class HyperParam:
    """A method's one scalar hyperparameter: its name, type, range and direction.

    ``direction`` is +1 when a larger value gives more parameters (every shipped method);
    the budget solver relies on the count being monotone in that direction.
    """

    name: str
    kind: type  # int or float
    low: float
    high: float
    default: float
    direction: int = 1
    description: str = ""

    def validate(self, value: float) -> float:
        """Return ``value`` cast to the declared type, or raise ValueError naming the range."""
        cast = self.kind(value)
        if not (self.low <= cast <= self.high):
            raise ValueError(f"{self.name}={value} is outside [{self.low}, {self.high}]")
        return cast


class ParamsFn(Protocol):
    def __call__(self, spec: ConvSpec, hp: float | None, **options: Any) -> int: ...


class MacsFn(Protocol):
    def __call__(self, spec: ConvSpec, hp: float | None, in_hw: tuple[int, int], **options: Any) -> int: ...


@dataclass(frozen=True)
class Method:
    """Everything the rest of lowrank knows about one substitute method."""

    name: str
    description: str
    build: Callable[..., nn.Module]  # build(spec, hp, **options) -> module with Conv2d's call signature
    params: ParamsFn                  # exact analytic parameter count (unique parameters)
    macs: MacsFn                      # analytic mult-adds for one image of spatial size in_hw
    hp: HyperParam | None = None      # None for methods without a knob (dense, separable)
    options: dict[str, Any] = field(default_factory=dict)  # option name -> default value
    paper: str = ""


_REGISTRY: Registry[Method] = Registry("substitute method", "methods")


def register_method(method: Method) -> Method:
    """Add a method to the registry; a duplicate name is a programming error."""
    return _REGISTRY.add(method.name, method)


def get_method(name: str) -> Method:
    """Look up a method by name; an unknown name lists the known ones."""
    return _REGISTRY.get(name)


def list_methods() -> list[Method]:
    """All registered methods, sorted by name."""
    return [_REGISTRY.get(name) for name in _REGISTRY.names()]
