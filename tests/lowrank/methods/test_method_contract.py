"""The contract every registered substitute method keeps, parametrized over the registry.

A method registered later is tested here by being registered: drop-in shapes, gradients to every
parameter, exact analytic parameter counts, monotone counts along the declared direction, and
``module.macs`` agreeing with the declaration.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn

from lowrank.methods import ConvSpec, list_methods
from lowrank.methods._common import SubstituteConv

METHODS = list_methods()
IDS = [m.name for m in METHODS]

SPECS = [
    ConvSpec(8, 8, (3, 3), (1, 1), (1, 1)),                       # in == out, k=3
    ConvSpec(8, 16, (3, 3), (2, 2), (1, 1), bias=True),           # in < out, strided, bias
    ConvSpec(16, 8, (1, 1)),                                      # in > out, 1x1
    ConvSpec(12, 6, (1, 1), (2, 2)),                              # strided 1x1
    ConvSpec(6, 12, (1, 1), (2, 2), (1, 1), bias=True),           # strided, padded 1x1
    ConvSpec(6, 10, (3, 3), (1, 1), (2, 2), (2, 2)),              # dilated
    ConvSpec(5, 7, (3, 1), (1, 1), (1, 0)),                       # odd channels, non-square kernel
    ConvSpec(24, 24, (5, 5), (2, 2), (2, 2), bias=True),          # k=5
]
SPEC_IDS = [f"{s.in_channels}-{s.out_channels}-k{s.kernel_size[0]}x{s.kernel_size[1]}-s{s.stride[0]}"
            f"{'-b' if s.bias else ''}" for s in SPECS]


def hp_values(method, count: int = 5) -> list:
    """low, high, default and a few values in between (integers for int hyperparameters)."""
    if method.hp is None:
        return [None]
    hp = method.hp
    values = {hp.low, hp.high, hp.default}
    values |= {hp.low + (hp.high - hp.low) * i / (count - 1) for i in range(count)}
    if hp.kind is int:
        values = {int(round(v)) for v in values}
    values = {v for v in values if v > 0} or {hp.high}
    return sorted(values)


def dense_out(spec: ConvSpec, x: torch.Tensor) -> torch.Tensor:
    conv = nn.Conv2d(spec.in_channels, spec.out_channels, spec.kernel_size, spec.stride, spec.padding,
                     spec.dilation, spec.groups, spec.bias)
    return conv(x)


def small_hp(method):
    """A cheap hyperparameter value for forward/backward tests (keeps stacked methods small)."""
    if method.hp is None:
        return None
    return method.hp.default if method.hp.kind is float else min(int(method.hp.default), 3)


@pytest.mark.parametrize("spec", SPECS, ids=SPEC_IDS)
@pytest.mark.parametrize("method", METHODS, ids=IDS)
def test_drop_in_shape_and_attributes(method, spec):
    module = method.build(spec, small_hp(method))
    x = torch.randn(2, spec.in_channels, 9, 10)
    assert module(x).shape == dense_out(spec, x).shape
    assert isinstance(module, SubstituteConv)
    assert module.method_name == method.name
    assert module.spec == spec
    assert module.macs((9, 10)) == method.macs(spec, module.hp, (9, 10), **module.options)


@pytest.mark.parametrize("spec", SPECS[:3], ids=SPEC_IDS[:3])
@pytest.mark.parametrize("method", METHODS, ids=IDS)
def test_gradient_reaches_every_parameter(method, spec):
    module = method.build(spec, small_hp(method))
    x = torch.randn(2, spec.in_channels, 7, 7, requires_grad=True)
    out = module(x)
    (out * torch.randn_like(out)).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    for name, param in module.named_parameters():
        assert param.grad is not None, name
        assert torch.isfinite(param.grad).all(), name
        assert param.grad.abs().sum() > 0, name


@pytest.mark.parametrize("method", METHODS, ids=IDS)
def test_params_declaration_is_exact(method):
    for spec in SPECS:
        for hp in hp_values(method):
            module = method.build(spec, hp)
            actual = sum(p.numel() for p in module.parameters())
            assert method.params(spec, hp) == actual, (spec, hp)


@pytest.mark.parametrize("method", [m for m in METHODS if m.hp is not None],
                         ids=[m.name for m in METHODS if m.hp is not None])
def test_params_monotone_along_direction(method):
    hp = method.hp
    if hp.kind is int:
        grid = list(range(int(hp.low), int(hp.high) + 1))
    else:
        grid = [hp.low + (hp.high - hp.low) * i / 200 for i in range(201)]
    for spec in SPECS + [ConvSpec(64, 128, (3, 3), (1, 1), (1, 1)), ConvSpec(96, 96, (1, 1))]:
        counts = [method.params(spec, v) for v in grid]
        ordered = counts if hp.direction > 0 else counts[::-1]
        assert all(a <= b for a, b in zip(ordered, ordered[1:])), (spec, counts)
        if spec.in_channels >= 64:  # big enough that the knob must actually change the count
            assert ordered[0] < ordered[-1], spec


@pytest.mark.parametrize("method", METHODS, ids=IDS)
def test_macs_are_positive_integers_and_scale_with_area(method):
    spec = ConvSpec(16, 16, (3, 3), (1, 1), (1, 1))
    hp = small_hp(method)
    small, big = method.macs(spec, hp, (8, 8)), method.macs(spec, hp, (16, 16))
    assert isinstance(small, int) and small > 0
    assert big == 4 * small  # stride 1, same padding: every stage runs at H x W


@pytest.mark.parametrize("method", METHODS, ids=IDS)
def test_hyperparameter_outside_range_is_rejected(method):
    if method.hp is None:
        return
    with pytest.raises(ValueError):
        method.build(SPECS[0], method.hp.high * 2 + 1)


def test_registry_lists_this_libraries_methods():
    names = {m.name for m in METHODS}
    assert {"dense", "separable", "generic", "acdc", "hashed", "sep_hashed", "shuffle"} <= names
    for method in METHODS:
        if method.hp is not None:
            assert method.hp.low <= method.hp.default <= method.hp.high
            assert method.hp.direction in (-1, 1)
            assert not math.isnan(method.hp.low)
