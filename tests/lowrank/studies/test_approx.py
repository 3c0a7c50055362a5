"""lowrank.studies.approx: fits reach the known optima (dense exact, generic = Eckart-Young)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lowrank.methods import get_method
from lowrank.studies.approx import ApproxSettings, _fit_batched, _fit_one, _seeded, fit_variant, run_study, target_matrix
from lowrank.studies.layers import Variant, default_variants, effective_matrix, matched_grid, parse_method


def test_dense_fits_any_matrix_exactly():
    row = fit_variant(Variant("dense"), ApproxSettings(n=8, steps=600, lr=3e-2, seeds=2))
    assert row["params"] == 64
    assert row["mean"] < 1e-8


@pytest.mark.parametrize("rank", [1, 3])
def test_low_rank_bottleneck_reaches_the_eckart_young_optimum(rank):
    n = 8
    settings = ApproxSettings(n=n, steps=1500, lr=1e-2, seeds=2)
    row = fit_variant(Variant("generic", rank / n), settings)
    optima = []
    for seed in range(settings.seeds):  # the same targets the study draws, solved by numpy's SVD
        target = target_matrix(settings, torch.Generator().manual_seed(seed)).double().numpy()
        singular = np.linalg.svd(target, compute_uv=False)
        optima.append((singular[rank:] ** 2).sum() / n ** 2)
    for error, optimum in zip(row["errors"], optima):
        assert optimum <= error * (1 + 1e-6)
        assert error == pytest.approx(optimum, rel=0.03)


def test_seeds_fitted_together_equal_seeds_fitted_alone():
    settings = ApproxSettings(n=8, steps=25, lr=1e-2, seeds=3)
    variant = Variant("acdc", 3, {"shuffle": "random"})
    pairs = [_seeded(variant, settings, s) for s in range(settings.seeds)]
    together = _fit_batched([m for m, _ in pairs], torch.stack([t for _, t in pairs]), settings)
    alone = torch.stack([_fit_one(*_seeded(variant, settings, s), settings) for s in range(settings.seeds)])
    torch.testing.assert_close(together, alone, rtol=1e-4, atol=1e-6)


def test_more_acdc_layers_approximate_better_and_shuffles_differ():
    settings = ApproxSettings(n=16, steps=300, seeds=2)
    rows = run_study([Variant("acdc", 1), Variant("acdc", 8)], settings)
    assert rows[1]["mean"] < rows[0]["mean"] < 2 / 16  # better than the zero matrix's 1/N
    assert rows[0]["params"] == 2 * 16 and rows[1]["params"] == 2 * 16 * 8


def test_identical_layers_are_fitted_once_and_labelled():
    rows = run_study([Variant("dense"), Variant("separable")], ApproxSettings(n=6, steps=50, seeds=2))
    assert rows[1]["errors"] == rows[0]["errors"]
    assert "same layer as dense" in rows[1]["note"]


@pytest.mark.slow
def test_two_worker_processes_give_the_same_rows():
    variants = [Variant("generic", 0.25), Variant("hashed", 0.5)]
    settings = ApproxSettings(n=8, steps=40, seeds=2)
    one, two = run_study(variants, settings, jobs=1), run_study(variants, settings, jobs=2)
    assert [r["errors"] for r in one] == [r["errors"] for r in two]


def test_default_grid_matches_acdc_parameter_counts():
    counts = [v.params(32) for v in default_variants(32) if v.method == "generic"]
    assert counts == [64, 128, 256, 512, 1024, 2048]
    acdc = [v for v in default_variants(32) if v.method == "acdc"]
    assert {v.options["shuffle"] for v in acdc} == {"random", "riffle", "none"}
    assert sorted({v.hp for v in acdc}) == [1, 2, 4, 8, 16, 32]
    shuffle = get_method("shuffle")
    assert sorted(shuffle.params(__import__("lowrank.studies.layers", fromlist=["x"]).square_spec(32), g)
                  for g in matched_grid(shuffle, 32, [64, 2048])) == [64, 2048]


def test_effective_matrix_is_the_layer_on_row_vectors():
    torch.manual_seed(0)
    module = Variant("tt", 0.5).build(12)
    w = effective_matrix(module, 12)
    x = torch.randn(5, 12)
    torch.testing.assert_close(module(x[:, :, None, None])[:, :, 0, 0], x @ w, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("text,message", [("nosuch", "unknown"), ("acdc[shuffle=none", "expected"),
                                          ("acdc[colour=red]", "unknown option")])
def test_bad_method_specs(text, message):
    with pytest.raises((KeyError, ValueError), match=message):
        parse_method(text)


@pytest.mark.parametrize("kwargs", [{"target": "cauchy"}, {"optimizer": "rmsprop"}, {"steps": 0}, {"lr": float("nan")},
                                    {"seeds": 0}, {"n": 1}])
def test_bad_settings_are_refused(kwargs):
    with pytest.raises(ValueError):
        ApproxSettings(**kwargs)


STACKED = [Variant("acdc", 3, {"shuffle": "random"}), Variant("acdc", 4, {"shuffle": "none", "extra_riffle": True}),
           Variant("block_acdc", 3, {"groups": 2}), Variant("afdf", 2)]


@pytest.mark.parametrize("variant", STACKED, ids=lambda v: v.label)
def test_stacked_layers_fit_through_stack_matrix_as_through_their_forward(variant):
    """The product path (``stack_matrix``) gives the figures the vmapped forward gives, to fp noise."""
    from lowrank.studies.approx import _fit_stacked, _stacked_cores

    settings = ApproxSettings(n=8, steps=30, lr=1e-2, seeds=3)
    pairs = [_seeded(variant, settings, s) for s in range(settings.seeds)]
    targets = torch.stack([t for _, t in pairs])
    cores = _stacked_cores([m for m, _ in pairs], settings.n)
    assert cores is not None
    own, product = _fit_stacked([m for m, _ in pairs], cores, targets, settings)
    torch.testing.assert_close(own, product, rtol=1e-5, atol=1e-6)
    generic = [_seeded(variant, settings, s) for s in range(settings.seeds)]
    reference = _fit_batched([m for m, _ in generic], targets, settings)
    torch.testing.assert_close(own, reference, rtol=1e-4, atol=1e-6)
    row = fit_variant(variant, settings)
    assert row["errors"] == pytest.approx(((reference - targets) ** 2).mean(dim=(1, 2)).tolist(), rel=1e-4)


def test_a_wrong_stack_matrix_is_not_used(monkeypatch):
    """A product that is not the layer's forward is refused before the fit (the generic path runs)."""
    from lowrank.methods.acdc import StackedACDCLinear
    from lowrank.studies import approx

    settings = ApproxSettings(n=8, steps=20, seeds=2)
    variant = Variant("acdc", 3, {"shuffle": "random"})
    expected = fit_variant(variant, settings)["errors"]
    right = StackedACDCLinear.stack_matrix
    monkeypatch.setattr(StackedACDCLinear, "stack_matrix", lambda self, a=None, d=None: right(self, a, d).flip(-1))
    assert approx._stacked_cores([_seeded(variant, settings, 0)[0]], settings.n) is None
    assert fit_variant(variant, settings)["errors"] == pytest.approx(expected, rel=1e-4)


def test_a_product_that_drifts_from_the_forward_is_refitted(monkeypatch):
    from lowrank.studies import approx

    settings = ApproxSettings(n=8, steps=20, seeds=2)
    variant = Variant("block_acdc", 2, {"groups": 2})
    expected = fit_variant(variant, settings)["errors"]
    fit = approx._fit_stacked
    monkeypatch.setattr(approx, "_fit_stacked", lambda *args: (lambda own, product: (own, product + 1))(*fit(*args)))
    with pytest.warns(RuntimeWarning, match="disagree"):
        row = fit_variant(variant, settings)
    assert row["errors"] == pytest.approx(expected, rel=1e-4)


def fit_ops(variant: Variant, steps: int) -> int:
    from torch.utils._python_dispatch import TorchDispatchMode

    class Count(TorchDispatchMode):
        count = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            Count.count += 1
            return func(*args, **(kwargs or {}))

    with Count():
        fit_variant(variant, ApproxSettings(n=16, steps=steps, seeds=2))
    return Count.count


@pytest.mark.parametrize("method", ["acdc", "block_acdc", "afdf"])
def test_a_fit_step_of_a_deep_stack_costs_about_what_a_shallow_one_does(method):
    """The default study's budget (issue 16): per optimiser step, a 16-layer stack runs a few more
    tensor operations than a 2-layer one (the product's log2 L levels), not 8x as many."""
    per_step = {layers: fit_ops(Variant(method, layers), 12) - fit_ops(Variant(method, layers), 4)
                for layers in (2, 16)}
    assert per_step[16] < 2 * per_step[2]
