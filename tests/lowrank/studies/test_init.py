"""lowrank.studies.init: the effective matrix at initialisation against closed forms."""

from __future__ import annotations

import math

import pytest
import torch

from lowrank.methods.acdc import StackedACDCLinear
from lowrank.studies.init import init_stats, reference_stds, run_init_study
from lowrank.studies.layers import Variant


def test_one_acdc_layer_matches_its_closed_form():
    # W = diag(a) C^T diag(d) C with a, d ~ N(1, s^2): E[mean W] = 1/N, E[mean W^2] = (1 + s^2)^2 / N;
    # s = 0.5 so that the s-dependence (1.5625 / N, not 1 / N or 1.25 / N) is what is tested
    n, s, draws = 8, 0.5, 3000
    torch.manual_seed(0)
    means, squares = [], []
    for _ in range(draws):
        layer = StackedACDCLinear(n, n, 1, shuffle="none").double()
        with torch.no_grad():
            layer.a.normal_(1.0, s)
            layer.d.normal_(1.0, s)
            w = layer.matrix()
        means.append(float(w.mean()))
        squares.append(float((w ** 2).mean()))
    assert sum(means) / draws == pytest.approx(1 / n, rel=0.03)
    assert sum(squares) / draws == pytest.approx((1 + s ** 2) ** 2 / n, rel=0.03)


def test_study_row_of_one_acdc_layer_has_the_closed_form_std():
    n = 32
    row = init_stats(Variant("acdc", 1, {"shuffle": "none"}), n, seeds=5)
    # std^2 = E[W^2] - E[W]^2 = (1+s^2)^2/N - 1/N^2 (up to sampling noise of the s^2 terms)
    expected = math.sqrt((1 + 1e-4) ** 2 / n - 1 / n ** 2)
    assert row["std"] == pytest.approx(expected, rel=1e-3)
    assert row["diag_mean"] == pytest.approx(1.0, abs=1e-2)


def test_dense_layer_has_pytorchs_default_init_std():
    row = init_stats(Variant("dense"), 128, seeds=3)
    assert row["std"] == pytest.approx(1 / math.sqrt(3 * 128), rel=0.02)
    assert row["torch_default_std"] == pytest.approx(1 / math.sqrt(3 * 128))
    assert abs(row["mean"]) < 3e-3


def test_reference_stds():
    refs = reference_stds(8)
    assert refs["glorot"] == pytest.approx(0.35355339059327373)  # the notes' "Glorot stdv" at dim 8
    assert refs["kaiming"] == pytest.approx(0.5)


def test_rows_for_every_dimension_and_notes_for_unbuildable():
    rows = run_init_study([Variant("acdc", 16), Variant("shuffle", 4)], [4, 8], seeds=1)
    assert [(r["method"], r["n"]) for r in rows] == [("acdc", 4), ("acdc", 8), ("shuffle", 4), ("shuffle", 8)]
    assert all(r["params"] for r in rows)
