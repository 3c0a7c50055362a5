"""Bit widths from posterior variances and the two compression factors, computed by hand."""

from __future__ import annotations

import math

import pytest
import torch

from lowrank.bayes.convert import bayes_layers, convert
from lowrank.bayes.precision import compression, exponent_bits, significand_bits
from lowrank.bayes.prune import call_order, group_masks, kept_units
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
