"""Counting: unique parameters and per-image mult-adds against FlopCounterMode and published figures."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn
import torchvision
from torch.utils.flop_counter import FlopCounterMode

from lowrank.count import count_model, meta_copy
from lowrank.methods import get_method
from lowrank.models import create_model
from lowrank.substitute import substitute


def flop_counter_macs(model: nn.Module, input_shape: tuple[int, ...], device: str = "cpu") -> int:
    """torch's own count of conv/matmul work for one image (it reports 2 flops per mult-add)."""
    counter = FlopCounterMode(display=False)
    was_training = model.training
    model.eval()
    with counter, torch.no_grad():
        model(torch.zeros((1, *input_shape), device=device))
    model.train(was_training)
    return counter.get_total_flops() // 2


def bn_elements(report) -> int:
    """Elements entering batch norm (one mult-add each in the research notes' counter)."""
    return sum(math.prod(row.in_shape) for row in report.layers if row.type.startswith("BatchNorm"))


@pytest.mark.parametrize("name,kwargs,shape", [
    ("tiny_convnet", dict(width=64), (1, 28, 28)),
    ("tiny_convnet", dict(width=8, in_channels=3), (3, 13, 9)),
    ("mlp", dict(image_size=8), (1, 8, 8)),
    ("resnet9", {}, (3, 32, 32)),
])
def test_dense_models_match_flop_counter_and_parameter_sum(name, kwargs, shape):
    model = create_model(name, **kwargs)
    report = count_model(model, shape)
    assert report.macs == flop_counter_macs(model, shape)
    assert report.params == sum(p.numel() for p in model.parameters())
    assert report.params == sum(row.params for row in report.layers)  # no sharing in these models


def test_wide_resnet50_2_counts_on_meta():
    with torch.device("meta"):
        model = torchvision.models.wide_resnet50_2()
    report = count_model(model, (3, 224, 224))
    assert report.params == 68_883_240  # torchvision's published figure
    assert report.macs == flop_counter_macs(model, (3, 224, 224), device="meta")
    assert all(p.device.type == "meta" for p in model.parameters())


def test_wrn_28_10_reproduces_the_research_notes():
    """Notes 000: Params 3.64792E+07, Mult-Adds 5.24564E+09 (their counter also charged batch norm)."""
    with torch.device("meta"):
        model = create_model("wrn", depth=28, widen_factor=10)
    report = count_model(model, (3, 32, 32))
    assert report.params == 36_479_194
    assert abs(report.macs - 5.24564e9) / 5.24564e9 < 1e-3
    assert f"{report.macs + bn_elements(report):.5E}" == "5.24564E+09"  # exact once BN is charged like theirs
    assert report.macs == flop_counter_macs(model, (3, 32, 32), device="meta")


def test_wrn_40_2_and_resnet18_reproduce_the_research_notes():
    """Notes 001: WRN(40,2) 3.28304E+08 / 2.24355E+06 (BN charged), ResNet18 5.55423E+08 / 1.11740E+07."""
    with torch.device("meta"):
        wrn = create_model("wrn", depth=40, widen_factor=2)
        resnet = create_model("resnet18")
    report = count_model(wrn, (3, 32, 32))
    assert report.params == 2_243_546
    assert f"{report.macs + bn_elements(report):.5E}" == "3.28304E+08"
    report = count_model(resnet, (3, 32, 32))
    assert f"{report.params:.5E}" == "1.11740E+07" and f"{report.macs:.5E}" == "5.55423E+08"


def test_substituted_layers_are_leaves_counted_by_their_declaration():
    model = create_model("tiny_convnet", width=16)
    substitute(model, "tt", 0.5)
    report = count_model(model, (1, 12, 12))
    rows = {row.name: row for row in report.layers}
    method = get_method("tt")
    layer = model.get_submodule("stage2.0.0")
    assert rows["stage2.0.0"].type == "TTConv"
    assert rows["stage2.0.0"].macs == method.macs(layer.spec, 0.5, (12, 12))
    assert rows["stage2.0.0"].params == method.params(layer.spec, 0.5)
    assert rows["stage2.0.0"].in_shape == (16, 12, 12) and rows["stage2.0.0"].out_shape == (32, 6, 6)
    assert not any(name.startswith("stage2.0.0.") for name in rows)  # internals are not rows
    assert report.params == sum(p.numel() for p in model.parameters())
    # flop counter sees depthwise + pointwise + reconstruction; the declaration leaves out reconstruction
    assert report.macs < flop_counter_macs(model, (1, 12, 12))


def test_shared_parameters_count_once_and_reused_modules_count_per_call():
    class Tied(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Linear(8, 8, bias=False)
            self.b = nn.Linear(8, 8, bias=False)
            self.b.weight = self.a.weight  # tied
            self.conv = nn.Conv2d(2, 2, 3, padding=1, bias=False)

        def forward(self, x):
            x = self.conv(self.conv(x))  # one module applied twice
            return self.b(self.a(x.flatten(1)[:, :8]))

    model = Tied()
    report = count_model(model, (2, 4, 4))
    assert report.params == 64 + 36
    rows = {row.name: row for row in report.layers}
    assert rows["conv"].calls == 2 and rows["conv"].macs == 2 * 16 * 2 * 2 * 9
    assert report.macs == flop_counter_macs(model, (2, 4, 4))


def test_linear_on_sequences_counts_every_position():
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.Flatten(2), nn.Linear(25, 6))
    assert count_model(model, (3, 5, 5)).macs == flop_counter_macs(model, (3, 5, 5)) == 25 * 12 + 4 * 25 * 6


def test_model_that_cannot_run_on_meta_falls_back_to_a_real_pass():
    class PlainTensor(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.scale = torch.full((1, 4, 1, 1), 2.0)  # not a buffer: stays on cpu in a meta copy

        def forward(self, x):
            return self.conv(x) * self.scale.to(x.device) if x.device.type == "cpu" else self.conv(x) * self.scale

    model = PlainTensor().train()
    report = count_model(model, (3, 8, 8))
    assert report.macs == 6 * 6 * 4 * 3 * 9 and model.training


def test_meta_copy_shares_no_storage_and_keeps_structure():
    model = create_model("tiny_convnet", width=8)
    copy = meta_copy(model)
    assert [n for n, _ in copy.named_parameters()] == [n for n, _ in model.named_parameters()]
    assert all(p.device.type == "meta" for p in copy.parameters())
    assert all(p.device.type == "cpu" for p in model.parameters())
    assert count_model(copy, (1, 10, 10)).macs == count_model(model, (1, 10, 10)).macs


def test_params_only_without_input_shape():
    report = count_model(create_model("tiny_convnet", width=8))
    assert report.macs == 0 and report.params == sum(p.numel() for p in create_model("tiny_convnet", width=8).parameters())


def test_stacked_acdc_linear_counts_its_analytic_mult_adds():
    import torch.nn as nn

    from lowrank.count import count_model
    from lowrank.methods.acdc import StackedACDCLinear, pointwise_cost

    model = nn.Sequential(nn.Flatten(), StackedACDCLinear(64, 32, layers=4), nn.ReLU(), nn.Linear(32, 10))
    report = count_model(model, (1, 8, 8))
    acdc_row = next(row for row in report.layers if row.type == "StackedACDCLinear")
    # N = 64: the fast path costs 4 x (2 DCTs of 64*6 + 2*64) = 3584 > 64*32 = 2048, so the collapsed matrix counts
    assert acdc_row.macs == pointwise_cost(64, 32, 4) == min(4 * (2 * 64 * 6 + 2 * 64), 64 * 32) == 2048
    assert report.macs == 2048 + 32 * 10
    assert acdc_row.params == 2 * 4 * 64


def darts_reference_params(model: nn.Module) -> int:
    """The DARTS code's count_parameters_in_MB (x 1e6): every parameter whose name lacks 'auxiliary'."""
    return sum(math.prod(v.size()) for name, v in model.named_parameters() if "auxiliary" not in name)


def test_darts_counts_the_deployable_network_and_the_auxiliary_head_apart():
    with torch.device("meta"):
        model = create_model("darts")
    report = count_model(model, (3, 32, 32))
    assert report.params == darts_reference_params(model) == 3_349_342
    assert report.training_only_params == sum(p.numel() for p in model.auxiliary_head.parameters()) == 476_426
    assert report.training_only == [{"module": "auxiliary_head", "label": "auxiliary head", "params": 476_426}]
    assert sum(r.params for r in report.layers if not r.training_only) == report.params
    assert report.macs == flop_counter_macs(model, (3, 32, 32), device="meta")  # eval: the head does not run
    with torch.device("meta"):
        plain = create_model("darts", auxiliary=False)
    assert count_model(plain, (3, 32, 32)).params == 3_349_342 and count_model(plain).training_only_params == 0


def test_training_count_runs_the_auxiliary_head():
    """count_training per image == FlopCounterMode over a training forward of the batch / batch."""
    from lowrank.count import count_training

    with torch.device("meta"):
        model = create_model("darts")
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model.train()(torch.zeros((4, 3, 32, 32), device="meta"))
    report = count_training(model, (3, 32, 32), batch_size=4)
    assert report.macs * 4 * 2 == counter.get_total_flops()
    eval_macs = count_model(model, (3, 32, 32)).macs
    head = sum(r.macs for r in report.layers if r.training_only)
    assert report.macs - eval_macs == head == 695_808  # 1x1 576->128 at 2x2, 2x2 128->768, linear 768->10


def test_a_parameter_shared_with_the_deployable_network_is_deployable():
    class Tied(nn.Module):
        training_only_modules = {"head": "head", "missing": "not a module"}

        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Linear(4, 4, bias=False)
            self.head = nn.Sequential(nn.Linear(4, 4, bias=False), nn.Linear(4, 2, bias=False))
            self.head[0].weight = self.body.weight

        def forward(self, x):
            return self.body(x)

    report = count_model(Tied(), (4,))
    assert (report.params, report.training_only_params) == (16, 8)
    assert report.training_only == [{"module": "head", "label": "head", "params": 8}]


def test_budget_refers_to_the_deployable_network():
    from lowrank.budget import solve_budget

    skip = ["@stem", "@shortcut", "auxiliary_head.*"]
    with torch.device("meta"):
        model = create_model("darts")
    solved = solve_budget(model, "sep_hashed", target_fraction=0.25, skip=skip)
    assert solved.dense_params == 3_349_342 and solved.target == round(0.25 * 3_349_342)
    built = meta_copy(model)
    substitute(built, "sep_hashed", solved.hp, skip=skip)
    assert darts_reference_params(built) == solved.achieved == count_model(built).params
    assert abs(solved.gap) < 1e-3
    # substituting the head too changes nothing the budget sees
    again = solve_budget(model, "sep_hashed", target_fraction=0.25, skip=["@stem", "@shortcut"])
    assert (again.hp, again.achieved) == (solved.hp, solved.achieved)


def test_training_count_of_substitutes_matches_what_a_training_forward_executes(monkeypatch):
    """ACDC (collapse path: a matrix build per forward) and TT (a reconstruction per forward) in a
    real network: count_training x batch == executed, counted as in test_executed_macs."""
    from lowrank.count import count_training
    from tests.lowrank.methods.test_executed_macs import executed

    for method, hp in (("acdc", 4), ("tt", 0.5), ("afdf", 2)):
        model = create_model("tiny_convnet", width=8)
        substitute(model, method, hp)
        for batch in (1, 3):
            report = count_training(model, (1, 8, 8), batch_size=batch)
            x = torch.randn(batch, 1, 8, 8)
            model.train()(x)  # process-wide tables (the DCT matrix of each N) are built once, not per forward
            done = executed(model, x, monkeypatch)
            layers = sum(1 for r in report.layers if r.macs)
            assert abs(report.macs * batch - done) <= batch * layers / 2, (method, batch)
        assert count_training(model, (1, 8, 8), 64).macs > count_model(model, (1, 8, 8)).macs
