"""What a layer study studies: variants of registered methods as square 1x1 layers.

A :class:`Variant` is one method with one hyperparameter value and options (e.g. ``acdc`` with
4 layers and ``shuffle=none``). Built as the 1x1 substitute of an N -> N convolution, any
registered method is a linear map of the channels, so its effective dense matrix W (``y = x W``)
is the image of the identity: N basis vectors pushed through as a batch of 1x1 images.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn

from ..methods import ConvSpec, Method, get_method, list_methods


def square_spec(n: int) -> ConvSpec:
    """The N -> N 1x1 convolution (no bias) every study replaces."""
    return ConvSpec(n, n, (1, 1))


@dataclass(frozen=True)
class Variant:
    """One method at one hyperparameter value with fixed options."""

    method: str
    hp: Any = None
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def series(self) -> str:
        """The method and its non-default options, e.g. ``acdc[shuffle=none]`` (one plot series)."""
        defaults = get_method(self.method).options
        changed = {k: v for k, v in sorted(self.options.items()) if defaults.get(k) != v}
        return self.method + ("[" + ",".join(f"{k}={v}" for k, v in changed.items()) + "]" if changed else "")

    @property
    def label(self) -> str:
        """The series with the hyperparameter, e.g. ``acdc[shuffle=none] layers=4``."""
        hp = get_method(self.method).hp
        return self.series if hp is None else f"{self.series} {hp.name}={self.hp:g}"

    def build(self, n: int) -> nn.Module:
        """The variant as the substitute of the N -> N 1x1 conv."""
        return get_method(self.method).build(square_spec(n), self.hp, **self.options)

    def params(self, n: int) -> int:
        """Its exact parameter count at N (the method's declaration)."""
        method = get_method(self.method)
        return int(method.params(square_spec(n), self.hp, **{**method.options, **self.options}))


def effective_matrix(module: nn.Module, n: int, *, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """W (n x n) with module(x) = x W for a batch of 1x1 images: the identity pushed through."""
    eye = torch.eye(n, dtype=dtype).reshape(n, n, 1, 1)
    return module(eye).reshape(n, n)


def parse_options(text: str) -> dict[str, Any]:
    """``shuffle=none,groups=8`` -> {'shuffle': 'none', 'groups': 8} (values read as YAML scalars)."""
    from .. import safe_yaml

    options: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"expected key=value, got {part!r}")
        options[key.strip()] = safe_yaml.load(value.strip())  # a too-large value is a ValueError too
    return options


def parse_method(text: str) -> tuple[Method, dict[str, Any]]:
    """``acdc[shuffle=none]`` -> (the acdc method, {'shuffle': 'none'}); unknown options refused."""
    name, _, rest = text.strip().partition("[")
    if rest and not rest.endswith("]"):
        raise ValueError(f"{text!r}: expected METHOD or METHOD[key=value,...]")
    method = get_method(name.strip())
    options = parse_options(rest[:-1]) if rest else {}
    unknown = sorted(set(options) - set(method.options))
    if unknown:
        known = ", ".join(sorted(method.options)) or "none"
        raise ValueError(f"{name}: unknown option(s) {', '.join(unknown)} (its options: {known})")
    return method, options


def matched_grid(method: Method, n: int, targets: list[int], options: dict | None = None) -> list[Any]:
    """Hyperparameter values whose parameter counts are closest to ``targets`` (deduplicated).

    Used for the default grids, so every method is studied at the same parameter counts as
    ACDC with 1, 2, 4, ... layers (2N, 4N, 8N, ...) as far as the method can reach them.
    """
    if method.hp is None:
        return [None]
    hp, spec, opts = method.hp, square_spec(n), {**method.options, **(options or {})}
    if hp.kind is int:
        candidates = list(range(int(hp.low), int(hp.high) + 1))
    else:  # log-spaced over the range (the low end may be 0 for rank scales)
        low = max(hp.low, hp.high * 1e-4)
        candidates = [low * (hp.high / low) ** (i / 400) for i in range(401)]
    counted = [(method.params(spec, v, **opts), v) for v in candidates]
    chosen: dict[int, Any] = {}
    for target in targets:
        params, value = min(counted, key=lambda pv: (abs(math.log(pv[0] / target)), pv[0]))
        if abs(math.log(params / target)) <= math.log(1.5):  # reachable within a factor 1.5
            chosen.setdefault(params, value)
    return [chosen[p] for p in sorted(chosen)]


def acdc_targets(n: int, max_layers: int | None = None) -> list[int]:
    """The notes' grid: parameters of ACDC with 1, 2, 4, ..., N layers (2N each), capped at 2N^2."""
    layers, targets = 1, []
    while layers <= (max_layers or n):
        targets.append(2 * n * layers)
        layers *= 2
    return targets


def expanded_options(method: Method) -> list[dict[str, Any]]:
    """The option sets studied by default: every shuffle for ``acdc`` (the notes' comparison),
    the declared defaults for every other method (others can be asked for with METHOD[...])."""
    from ..methods.acdc import SHUFFLES

    if method.name == "acdc":
        return [{"shuffle": shuffle} for shuffle in ("random", "riffle", "none") if shuffle in SHUFFLES]
    return [{}]


def default_variants(n: int, methods: list[tuple[Method, dict]] | None = None,
                     grids: dict[str, list[Any]] | None = None) -> list[Variant]:
    """Every registered method (or the given ones) on the parameter-matched grid, or ``grids``' values."""
    chosen = methods if methods is not None else [(m, opts) for m in list_methods() for opts in expanded_options(m)]
    variants = []
    for method, options in chosen:
        values = (grids or {}).get(method.name) or matched_grid(method, n, acdc_targets(n), options)
        for value in values:
            variants.append(Variant(method.name, method.hp.validate(value) if method.hp else None, dict(options)))
    return variants
