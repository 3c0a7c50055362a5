"""Compression-scaled weight decay groups: coverage, scaling, and real optimizer steps."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from lowrank.methods import get_method
from lowrank.methods._common import SubstituteConv
from lowrank.models import create_model
from lowrank.param_groups import param_groups
from lowrank.substitute import substitute


def substituted(method: str = "tt", hp: float = 0.5) -> nn.Module:
    model = create_model("tiny_convnet", width=16)
    substitute(model, method, hp)
    return model


@pytest.mark.parametrize("no_decay", [False, True])
@pytest.mark.parametrize("scale", [False, True])
def test_groups_cover_every_parameter_exactly_once(scale, no_decay):
    model = substituted()
    groups = param_groups(model, 5e-4, scale_by_compression=scale, no_decay_bn_bias=no_decay)
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)) and set(ids) == {id(p) for p in model.parameters()}
    assert len({g["name"] for g in groups}) == len(groups)
    for optimizer in (torch.optim.SGD(groups, lr=0.1, momentum=0.9), torch.optim.AdamW(groups, lr=1e-3)):
        assert sum(len(g["params"]) for g in optimizer.param_groups) == len(list(model.parameters()))


def test_substituted_layers_get_weight_decay_scaled_by_their_compression():
    model = substituted("cp", 0.3)
    groups = {g["name"]: g for g in param_groups(model, 5e-4)}
    layers = {name: m for name, m in model.named_modules() if isinstance(m, SubstituteConv)}
    assert set(groups) == set(layers) | {"default"}
    for name, layer in layers.items():
        ratio = get_method("cp").params(layer.spec, 0.3) / layer.spec.dense_params
        assert groups[name]["weight_decay"] == pytest.approx(5e-4 * ratio)
        assert {id(p) for p in groups[name]["params"]} == {id(p) for p in layer.parameters()}
        assert ratio < 1
    assert groups["default"]["weight_decay"] == 5e-4


def test_sgd_step_applies_the_scaled_decay():
    """With zero gradients, SGD's step is p <- p - lr * wd * p, group by group."""
    model = substituted("tt", 0.4)
    groups = param_groups(model, 1e-2)
    before = {id(p): p.detach().clone() for p in model.parameters()}
    optimizer = torch.optim.SGD(groups, lr=0.5)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()
    for group in groups:
        for p in group["params"]:
            expected = before[id(p)] * (1 - 0.5 * group["weight_decay"])
            assert torch.allclose(p.detach(), expected)


def test_no_decay_group_holds_norm_parameters_and_biases():
    model = create_model("tiny_convnet", width=16)
    substitute(model, "tucker", 0.5)
    groups = {g["name"]: g for g in param_groups(model, 5e-4, no_decay_bn_bias=True)}
    expected = {id(p) for m in model.modules() if isinstance(m, nn.BatchNorm2d) for p in m.parameters()}
    expected.add(id(model.classifier.bias))
    assert {id(p) for p in groups["no_decay"]["params"]} == expected
    assert groups["no_decay"]["weight_decay"] == 0.0
    assert id(model.classifier.weight) in {id(p) for p in groups["default"]["params"]}


def test_dense_model_is_one_plain_group():
    model = create_model("tiny_convnet", width=8)
    groups = param_groups(model, 3e-4)
    assert [(g["name"], g["weight_decay"], len(g["params"])) for g in groups] == [
        ("default", 3e-4, len(list(model.parameters())))]
