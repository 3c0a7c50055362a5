"""Substitution pass: which convs are replaced, skip rules, devices, dtypes and shared modules."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torchvision

from lowrank.errors import ConfigError
from lowrank.methods import ConvSpec
from lowrank.methods._common import SubstituteConv
from lowrank.models import create_model
from lowrank.substitute import DEFAULT_SKIP, SKIP_TOKENS, plan_substitution, substitute


def convs(model: nn.Module) -> dict[str, nn.Conv2d]:
    return {name: m for name, m in model.named_modules() if isinstance(m, nn.Conv2d)}


def test_default_skip_keeps_stem_and_replaces_the_rest_of_tiny_convnet():
    model = create_model("tiny_convnet", width=16)
    before = {name: ConvSpec.from_conv(m) for name, m in convs(model).items()}
    x = torch.randn(2, 1, 12, 12)
    shape = model(x).shape
    report = substitute(model, "tt", 0.5)
    assert [row.name for row in report.replaced] == ["stage1.0.0", "stage1.1.0", "stage2.0.0", "stage2.1.0"]
    assert [(row.name, row.reason) for row in report.skipped] == [("stem.0", "skip rule '@stem'")]
    assert all(row.spec == before[row.name] for row in report.replaced + report.skipped)
    for row in report.replaced:
        layer = model.get_submodule(row.name)
        assert isinstance(layer, SubstituteConv) and layer.method_name == "tt" and layer.spec == before[row.name]
    assert isinstance(model.get_submodule("stem.0"), nn.Conv2d)
    assert model(x).shape == shape and report.warnings == []


def test_shortcut_token_matches_wrn_shortcuts_and_torchvision_downsample():
    with torch.device("meta"):
        wrn = create_model("wrn", depth=16, widen_factor=2)
        resnet = torchvision.models.resnet18()
    for model, word in ((wrn, "shortcut"), (resnet, "downsample")):
        names = set(convs(model))
        planned = {name for name, _ in plan_substitution(model)}
        shortcuts = {name for name in names if word in name}
        assert shortcuts and not planned & shortcuts
        first = next(iter(convs(model)))
        assert planned == names - shortcuts - {first}
        # without the token, shortcuts are replaced too
        assert shortcuts <= {name for name, _ in plan_substitution(model, skip=["@stem"])}


def test_glob_patterns_and_unmatched_pattern_warns():
    model = create_model("tiny_convnet", width=8)
    report = substitute(model, "cp", 0.3, skip=["@stem", "stage2.*", "nothing.here.*"])
    assert [row.name for row in report.replaced] == ["stage1.0.0", "stage1.1.0"]
    assert {row.name: row.reason for row in report.skipped}["stage2.1.0"] == "skip rule 'stage2.*'"
    assert report.warnings == ["skip pattern 'nothing.here.*' matches no convolution"]


def test_unknown_token_is_a_config_error_naming_valid_tokens():
    model = create_model("tiny_convnet", width=8)
    with pytest.raises(ConfigError) as info:
        substitute(model, "tt", 0.5, skip=["@stem", "@head"])
    assert info.value.key == "substitute.skip"
    assert all(token in str(info.value) for token in SKIP_TOKENS)
    assert isinstance(model.get_submodule("stage1.0.0"), nn.Conv2d)  # nothing was changed


def test_grouped_convs_stay_and_classifier_is_never_replaced():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Conv2d(8, 8, 3, groups=8), nn.Conv2d(8, 16, 1),
                          nn.Flatten(), nn.LazyLinear(4))
    report = substitute(model, "tucker", 0.5, skip=["@stem", "@classifier"])
    assert [row.name for row in report.replaced] == ["2"]
    assert {row.name: row.reason for row in report.skipped} == {"0": "skip rule '@stem'", "1": "grouped conv (groups=8)"}
    assert isinstance(model[1], nn.Conv2d) and isinstance(model[4], nn.LazyLinear)


def test_plan_builds_nothing_and_matches_substitute():
    model = create_model("tiny_convnet", width=8)
    plan = plan_substitution(model, DEFAULT_SKIP)
    assert all(isinstance(m, nn.Conv2d) for m in convs(model).values()) and len(plan) == 4
    report = substitute(model, "tt", 0.2)
    assert plan == [(row.name, row.spec) for row in report.replaced]


def test_shared_conv_is_replaced_everywhere_by_one_layer():
    shared = nn.Conv2d(4, 4, 3, padding=1)
    model = nn.Sequential(nn.Conv2d(1, 4, 1), shared, nn.ReLU(), shared)
    report = substitute(model, "tt", 0.5)
    assert [row.name for row in report.replaced] == ["1"]
    assert isinstance(model[1], SubstituteConv) and model[1] is model[3]


def test_keeps_device_dtype_and_mode():
    with torch.device("meta"):
        meta = create_model("tiny_convnet", width=8)
    substitute(meta, "cp", 0.5)
    assert all(p.device.type == "meta" for p in meta.parameters())
    model = create_model("tiny_convnet", width=8).double().eval()
    substitute(model, "tt", 0.5)
    layer = model.get_submodule("stage1.0.0")
    assert all(p.dtype == torch.float64 for p in layer.parameters()) and not layer.training
    assert model(torch.randn(1, 1, 8, 8, dtype=torch.float64)).dtype == torch.float64


@pytest.mark.parametrize("method,hp,options,pattern", [("hashed", 0.5, {}, "codes"), ("sep_hashed", 0.5, {}, "codes"),
                                                        ("acdc", 1, {"shuffle": "random"}, "perm")])
def test_seeded_methods_draw_a_pattern_per_layer_and_the_same_on_rebuild(method, hp, options, pattern):
    def patterns(seed: int) -> dict[str, torch.Tensor]:
        model = create_model("tiny_convnet", width=16)
        substitute(model, method, hp, {**options, "seed": seed})
        return {name: buf.clone() for name, buf in model.named_buffers() if name.endswith(pattern)}

    first = patterns(0)
    same_shape = [name for name in first if name.startswith("stage1.")]  # stage1.0.0, stage1.1.0: both 16->16 3x3
    assert len(same_shape) == 2
    assert not torch.equal(first[same_shape[0]], first[same_shape[1]])  # one pattern per layer
    again = patterns(0)
    assert all(torch.equal(first[name], again[name]) for name in first)  # a rebuild draws the same
    other = patterns(1)
    assert any(not torch.equal(first[name], other[name]) for name in first)  # the seed option matters
