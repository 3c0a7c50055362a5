"""Budget solver: exact counts, nearest achievable count, reachable ranges and errors."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
import torchvision

from lowrank.budget import NetworkCount, solve_budget
from lowrank.count import count_model
from lowrank.errors import BudgetError, ConfigError
from lowrank.methods import get_method, list_methods
from lowrank.methods import registry as method_registry
from lowrank.methods._common import SubstituteConv
from lowrank.models import create_model
from lowrank.substitute import DEFAULT_SKIP, substitute

CONTINUOUS = [m.name for m in list_methods() if m.hp is not None and m.hp.kind is float]
DISCRETE = [m.name for m in list_methods() if m.hp is not None and m.hp.kind is int]
NETWORKS = {
    "tiny_convnet_64": (lambda: create_model("tiny_convnet", width=64), (1, 28, 28)),
    "wrn_40_2": (lambda: create_model("wrn", depth=40, widen_factor=2), (3, 32, 32)),
}


def built_params(factory, method: str, hp, options=None) -> int:
    """Independent check: substitute a fresh meta network and count its unique parameters."""
    with torch.device("meta"):
        model = factory()
    substitute(model, method, hp, options=options)
    return sum(p.numel() for p in model.parameters())


def grid_best_gap(factory, method: str, target: int) -> int:
    """Smallest |count - target| over a fine hp grid: the solver must do at least as well."""
    with torch.device("meta"):
        model = factory()
    declaration = get_method(method)
    total = NetworkCount(model, declaration, {}, DEFAULT_SKIP)
    grid = np.linspace(declaration.hp.low, declaration.hp.high, 2001)
    return min(abs(total(float(h)) - target) for h in grid)


@pytest.mark.parametrize("fraction", [0.05, 0.1])
@pytest.mark.parametrize("network", list(NETWORKS))
@pytest.mark.parametrize("method", CONTINUOUS)
def test_continuous_methods_meet_budgets_within_one_percent(method, network, fraction):
    factory, shape = NETWORKS[network]
    result = solve_budget(factory, method, target_fraction=fraction, input_shape=shape)
    dense = sum(p.numel() for p in factory().parameters())
    assert result.dense_params == dense and result.target == round(fraction * dense)
    assert abs(result.gap) < 0.01, result
    assert result.achieved == built_params(factory, method, result.hp)
    assert abs(result.achieved - result.target) <= grid_best_gap(factory, method, result.target)
    assert result.reachable[0] <= result.target <= result.reachable[1]
    assert get_method(method).hp.low <= result.hp <= get_method(method).hp.high


@pytest.mark.parametrize("method", DISCRETE)
def test_integer_methods_pick_the_best_value_by_brute_force(method):
    factory, shape = NETWORKS["tiny_convnet_64"]
    with torch.device("meta"):
        model = factory()
    declaration = get_method(method)
    total = NetworkCount(model, declaration, {}, DEFAULT_SKIP)
    values = range(int(declaration.hp.low), int(declaration.hp.high) + 1)
    counts = [total(v) for v in values]
    target = (min(counts) + max(counts)) // 3
    result = solve_budget(model, method, target_params=target)
    assert isinstance(result.hp, int)
    assert abs(result.achieved - target) == min(abs(c - target) for c in counts)
    assert result.achieved == built_params(factory, method, result.hp)


def test_direction_minus_one_is_respected(monkeypatch):
    """A method whose count falls as hp rises (like shuffle's groups) is solved the other way round."""
    tt = get_method("tt")
    flipped = dataclasses.replace(
        tt, name="tt_flipped", hp=dataclasses.replace(tt.hp, direction=-1),
        params=lambda spec, hp, **o: tt.params(spec, 1.0 - hp, **o),
        build=lambda spec, hp, **o: tt.build(spec, 1.0 - hp, **o))
    monkeypatch.setitem(method_registry._REGISTRY._entries, "tt_flipped", flipped)
    factory, _ = NETWORKS["tiny_convnet_64"]
    plain = solve_budget(factory, "tt", target_fraction=0.08)
    result = solve_budget(factory, "tt_flipped", target_fraction=0.08)
    assert result.achieved == plain.achieved
    assert result.reachable == plain.reachable
    assert get_method("tt").params is tt.params


def test_absolute_target_and_model_instance_left_untouched():
    model = create_model("tiny_convnet", width=32)
    result = solve_budget(model, "cp", target_params=12_345, input_shape=(1, 28, 28))
    assert abs(result.achieved - 12_345) / 12_345 < 0.01
    assert sum(isinstance(m, nn.Conv2d) for m in model.modules()) == 5
    assert not any(isinstance(m, SubstituteConv) for m in model.modules())
    assert all(p.device.type == "cpu" for p in model.parameters())
    substituted = create_model("tiny_convnet", width=32)
    substitute(substituted, "cp", result.hp)
    assert count_model(substituted, (1, 28, 28)).macs == result.macs


@pytest.mark.parametrize("kwargs", [dict(target_fraction=0.9), dict(target_params=2), dict(target_fraction=0.001)])
def test_unreachable_targets_raise_budget_error_with_the_range(kwargs):
    factory, _ = NETWORKS["tiny_convnet_64"]
    with torch.device("meta"):
        model = factory()
    total = NetworkCount(model, get_method("tt"), {}, DEFAULT_SKIP)
    low, high = total(0.0), total(1.0)
    with pytest.raises(BudgetError) as info:
        solve_budget(factory, "tt", **kwargs)
    message = str(info.value)
    assert "'tt'" in message and f"{low:,}" in message and f"{high:,}" in message
    assert f"{low / total.dense:.3g}" in message and f"{high / total.dense:.3g}" in message


def test_methods_without_hp_report_their_count():
    factory, _ = NETWORKS["tiny_convnet_64"]
    for method in [m.name for m in list_methods() if m.hp is None]:
        result = solve_budget(factory, method, target_fraction=0.5)
        assert result.hp is None and result.achieved == built_params(factory, method, None)
        assert result.reachable == (result.achieved, result.achieved)


@pytest.mark.parametrize("kwargs", [{}, dict(target_fraction=0.1, target_params=100),
                                    dict(target_fraction=1.5), dict(target_fraction=0.0), dict(target_params=1),
                                    dict(target_params=10.5)])
def test_bad_targets_are_config_errors(kwargs):
    with pytest.raises(ConfigError):
        solve_budget(NETWORKS["tiny_convnet_64"][0], "tt", **kwargs)


def test_options_are_passed_to_counts_and_builds():
    factory, _ = NETWORKS["tiny_convnet_64"]
    two = solve_budget(factory, "tt", target_fraction=0.06, options={"dims": 2})
    assert two.achieved == built_params(factory, "tt", two.hp, options={"dims": 2})


@pytest.mark.parametrize("method", ["tt", "tucker", "cp", "generic"])
def test_large_networks_solve(method):
    """WRN-28-10 and torchvision's WRN-50-2, solved on meta from factories."""
    for factory, shape in ((lambda: create_model("wrn"), (3, 32, 32)),
                           (torchvision.models.wide_resnet50_2, (3, 224, 224))):
        result = solve_budget(factory, method, target_fraction=0.1, input_shape=shape)
        assert abs(result.gap) < 0.01 and result.macs > 0


@pytest.mark.parametrize("device", ["meta", "cpu"])
def test_a_method_whose_params_lie_is_caught_by_solver_and_build(monkeypatch, device):
    """The analytic count is checked against the substituted layers: by solve_budget itself, and by
    build_network, which skips the solver's own substitution and checks the network it builds."""
    from lowrank.build import build_network
    from lowrank.config import load

    tt = get_method("tt")
    liar = dataclasses.replace(tt, name="tt_liar", params=lambda spec, hp, **o: tt.params(spec, hp, **o) - 1)
    monkeypatch.setitem(method_registry._REGISTRY._entries, "tt_liar", liar)
    factory, _ = NETWORKS["tiny_convnet_64"]
    with pytest.raises(RuntimeError, match="its params\\(\\) disagrees with build\\(\\)"):
        solve_budget(factory, "tt_liar", target_fraction=0.1)
    config = load(Path(__file__).resolve().parents[2] / "presets" / "quickstart.yaml", ["substitute.method=tt", "substitute.budget=0.1",
                                                "substitute.hp=null", "substitute.options={}"])
    config.substitute.method = "tt_liar"  # past the schema's registry check: the build path is what is tested
    with pytest.raises(RuntimeError, match="disagrees with build"):
        build_network(config, 10, (1, 8, 8), device=device)
    config.substitute.method = "tt"
    assert build_network(config, 10, (1, 8, 8), device=device).params > 0
