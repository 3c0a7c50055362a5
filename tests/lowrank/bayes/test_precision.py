"""Bit widths from posterior variances and the two compression factors, computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lowrank.bayes.convert import bayes_layers, convert
from lowrank.bayes.precision import FloatFormat, compression, exponent_bits, significand_bits
from lowrank.bayes.prune import call_order, export_pruned, group_masks, kept_units, rounded
from lowrank.models.small import MLP


def test_significand_bits_count_the_round_offs_below_twice_the_variance():
    # 2 var = 2^-5 exactly: the round-offs 2^-1 .. 2^-4 are above it -> 4 bits; 2 var = 0.3 -> 1 bit
    assert significand_bits(torch.tensor([2.0 ** -6])) == 4
    assert significand_bits(torch.tensor([0.15])) == 1
    assert significand_bits(torch.tensor([2.0 ** -6, 0.15])) == math.ceil((4 + 1) / 2)
    assert significand_bits(torch.tensor([1e-30])) == 23


def test_exponent_bits_follow_the_tutorial_formula():
    assert exponent_bits(10.0) == math.ceil(math.log2(math.log2(10.0) + 1) + 1) == 4
    assert exponent_bits(0.3) == exponent_bits(2.0) == 2  # the formula is undefined below 2: clamped


def test_compression_factors_from_kept_weights_and_bits():
    torch.manual_seed(0)
    model = MLP(in_features=8, hidden=(6,))
    convert(model)
    (_, first), (_, second) = bayes_layers(model)
    with torch.no_grad():
        first.z_logvar.fill_(-9.0)
        first.z_logvar[:4] = 5.0  # half the pixels pruned
        second.z_logvar.fill_(-9.0)
        for layer in (first, second):
            layer.weight_logvar.fill_(math.log(0.75 * 2.0 ** -7))  # 2 var = 1.5 * 2^-7: 6 significand bits
            layer.weight_mu.clamp_(-1, 1)
    masks = group_masks(model, -3.0)
    kept = kept_units(model, masks, call_order(model, torch.zeros(1, 8)))
    comp = compression(kept)
    dense = 8 * 6 + 6 * 10
    left = 4 * 6 + 6 * 10
    assert comp.dense_weights == dense and comp.kept_weights == left
    assert comp.architecture == pytest.approx(dense / left)
    # posterior variance also carries z's: mu_z^2 var_w + var_z mu^2 + var_z var_w ~ var_w (var_z ~ 1e-4)
    assert set(comp.significand.values()) == {6}
    bits = 1 + comp.exponent + 6
    assert comp.precision == pytest.approx(32 * dense / (left * bits))


# -- the float format the bit widths describe (FloatFormat.round), against independent references --

def float16_probe() -> torch.Tensor:
    """float64 values across float16's whole range: random magnitudes from the smallest subnormal to
    the largest finite value, both signs, plus every tie between neighbouring float16 values of a
    few binades (normal and subnormal), where round-half-to-even decides."""
    generator = torch.Generator().manual_seed(0)
    exponents = torch.empty(20000, dtype=torch.float64).uniform_(-24.5, 15.99, generator=generator)
    values = torch.exp2(exponents) * torch.where(torch.rand(20000, generator=generator) < 0.5, -1.0, 1.0)
    grid = torch.from_numpy(np.arange(0, 2 ** 15 - 1024, 37, dtype=np.uint16).view(np.float16).astype(np.float64))
    ties = (grid[:-1] + (grid[1:] - grid[:-1]) / 2)  # halfway points (exact in float64)
    return torch.cat([values, ties, -ties, grid, torch.tensor([0.0, 65504.0, 2.0 ** -24, 2.0 ** -25 * 3])])


def test_ten_significand_and_five_exponent_bits_round_as_numpys_float16_cast():
    x = float16_probe()
    assert (x.abs() <= 65504).all()  # in range: numpy would give inf beyond, the format saturates
    expected = torch.from_numpy(x.numpy().astype(np.float16).astype(np.float64))
    got = FloatFormat.ieee(10, 5).round(x)
    assert torch.equal(got, expected), int((got != expected).sum())
    # torch's own cast agrees from float32 (from float64 it rounds twice, through float32: not a reference)
    x32 = x.float()
    assert torch.equal(FloatFormat.ieee(10, 5).round(x32), x32.to(torch.float16).float())


def test_seven_and_eight_bits_round_as_bfloat16_and_twenty_three_and_eight_keep_float32():
    generator = torch.Generator().manual_seed(1)
    bits = torch.randint(-2 ** 31, 2 ** 31 - 1, (50000,), dtype=torch.int64, generator=generator).to(torch.int32)
    ties = (bits & ~0xFFFF) | 0x8000  # exactly halfway between two bfloat16 values: half to even decides
    x = torch.cat([bits, ties]).view(torch.float32)
    x = x[torch.isfinite(x) & (x.abs() < 3.3e38)]  # below bfloat16's largest finite value, so no overflow
    assert torch.equal(FloatFormat.ieee(7, 8).round(x), x.to(torch.bfloat16).to(torch.float32))
    assert torch.equal(FloatFormat.ieee(23, 8).round(x), x)  # float32 itself, subnormals included


def enumerated(fmt: FloatFormat) -> list[tuple[float, int]]:
    """Every non-negative value of ``fmt`` built from its bit fields (exponent code 0: 0 and the
    subnormals; codes 1.. the normal binades from emin), with the last bit of its integer code."""
    values = [f * 2.0 ** (fmt.emin - fmt.significand) for f in range(2 ** fmt.significand)]
    for exponent in range(fmt.emin, fmt.emax + 1):
        values += [(1 + f / 2 ** fmt.significand) * 2.0 ** exponent for f in range(2 ** fmt.significand)]
    return [(value, code % 2) for code, value in enumerate(values)]  # code = exponent code * 2^s + fraction


@pytest.mark.parametrize("fmt", [FloatFormat(2, 3, emin=-5, emax=1), FloatFormat(0, 2, emin=-2, emax=0),
                                 FloatFormat(3, 2, emin=-3, emax=-1)])
def test_rounding_picks_the_nearest_enumerated_value_ties_to_even_and_saturates(fmt):
    table = enumerated(fmt)
    values = sorted(v for v, _ in table)
    assert len(set(values)) == len(values) and values[-1] == fmt.max_finite
    probes = [v * k for v in values for k in (1.0, 1.0001, 0.9999)]
    probes += [(a + b) / 2 for a, b in zip(values, values[1:])]  # ties
    probes += [fmt.max_finite * 1.5, 1e9]  # past the range: saturates
    for x in probes:
        best = min(abs(v - x) for v, _ in table)
        nearest = [(v, odd) for v, odd in table if abs(v - x) == best]
        expected = nearest[0][0] if len(nearest) == 1 else next(v for v, odd in nearest if not odd)
        assert FloatFormat.round(fmt, torch.tensor([x, -x], dtype=torch.float64)).tolist() == [expected, -expected], x


def test_the_fitted_range_ends_at_the_largest_weights_exponent_and_spends_every_code_below_it():
    assert FloatFormat.fitted(4, 3, 3.0) == FloatFormat(4, 3, emin=1 - 6, emax=1)  # 3 = 1.5 * 2^1; 7 binades
    assert FloatFormat.fitted(4, 2, 0.3).emax == -2 and FloatFormat.fitted(4, 2, 0.25).emax == -2
    assert FloatFormat.fitted(4, 2, 0.0).emax == 0
    fmt = FloatFormat.fitted(3, 2, 0.3)
    w = torch.tensor([0.3, -0.3, 0.01])  # the largest weight is in range; 0.01 < 2^emin: a subnormal
    assert fmt.round(w).tolist() == pytest.approx([0.3125, -0.3125, 2.0 ** -7], abs=0)
    # the tutorial's grid of step 2^-3 loses both: 0.3 -> 0.25, 0.01 -> 0
    assert rounded(w, 3).tolist() == [0.25, -0.25, 0.0]


def test_compression_describes_the_format_the_quantised_model_uses():
    torch.manual_seed(0)
    model = MLP(in_features=8, hidden=(6,))
    convert(model)
    for _, layer in bayes_layers(model):
        with torch.no_grad():
            layer.z_logvar.fill_(-9.0)
            layer.weight_logvar.fill_(math.log(0.75 * 2.0 ** -7))  # 6 significand bits
    masks = group_masks(model, -3.0)
    kept = kept_units(model, masks, call_order(model, torch.zeros(1, 8)))
    comp = compression(kept)
    largest = max(float(row.layer.mean_weight().detach().abs().max()) for row in kept)
    assert comp.largest == pytest.approx(largest)
    formats = comp.formats
    assert {f.significand for f in formats.values()} == {6} and {f.exponent for f in formats.values()} == {comp.exponent}
    assert all(f.emax == math.floor(math.log2(largest)) for f in formats.values())
    assert "float: 1 sign + 2 exponent bits" in comp.describe() and "net.1 6" in comp.describe()

    quantised = export_pruned(model, kept, {name: f.round for name, f in formats.items()})
    for row in kept:
        weight = quantised.get_submodule(row.name)
        weight = (weight[-1] if isinstance(weight, torch.nn.Sequential) else weight).weight
        assert torch.equal(formats[row.name].round(weight), weight)  # on the format's values
        assert not torch.equal(weight, row.layer.mean_weight())  # and rounded
        assert (weight - row.layer.mean_weight()).abs().max() <= 2.0 ** (formats[row.name].emax - 6)
