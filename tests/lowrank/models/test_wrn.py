"""WRN: published parameter and mult-add counts, the reference forward, taps, dropout."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from lowrank.distill import TapRecorder
from lowrank.models import create_model
from lowrank.models.wrn import WideResNet


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def hook_counts(model: nn.Module, x: torch.Tensor) -> tuple[int, int]:
    """(conv + linear mult-adds, elements leaving every BatchNorm) from one forward pass."""
    macs = [0]
    bn_elements = [0]

    def on_layer(module: nn.Module, inputs, output) -> None:
        if isinstance(module, nn.Conv2d):
            k = module.kernel_size[0] * module.kernel_size[1] * module.in_channels // module.groups
            macs[0] += output.numel() * k
        elif isinstance(module, nn.Linear):
            macs[0] += output.numel() * module.in_features
        else:
            bn_elements[0] += output.numel()

    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear, nn.BatchNorm2d)):
            module.register_forward_hook(on_layer)
    model.eval()(x)
    return macs[0], bn_elements[0]


@pytest.mark.parametrize("depth, widen, expected", [(28, 10, 36_479_194), (40, 2, 2_243_546), (16, 8, 10_961_370)])
def test_parameter_counts_match_the_published_figures(depth: int, widen: int, expected: int) -> None:
    with torch.device("meta"):
        model = create_model("wrn", depth=depth, widen_factor=widen)
    assert n_params(model) == expected


def test_wrn_28_10_mult_adds_match_the_notes_and_the_flop_counter() -> None:
    with torch.device("meta"):
        model = create_model("wrn", depth=28, widen_factor=10)
        x = torch.zeros(1, 3, 32, 32)
    macs, bn_elements = hook_counts(model, x)
    with FlopCounterMode(display=False) as counter:
        model(x)
    assert macs == 5_243_328_768
    assert counter.get_total_flops() == 2 * macs
    # The notes' counter ("Mult-Adds: 5.24564E+09") also counts one op per ReLU element and the
    # classifier's bias adds; in a WRN every BN is followed by a ReLU.
    assert f"{macs + bn_elements + 10:.5E}" == "5.24564E+09"


def _reference_forward(model: WideResNet, x: torch.Tensor) -> torch.Tensor:
    """The functional WRN of the authors' attention-transfer code, on ``model``'s weights (eval)."""

    def act(bn: nn.BatchNorm2d, h: torch.Tensor) -> torch.Tensor:
        return F.relu(F.batch_norm(h, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps))

    def block(b, h: torch.Tensor, stride: int) -> torch.Tensor:
        o1 = act(b.bn1, h)
        y = F.conv2d(o1, b.conv1.weight, stride=stride, padding=1)
        z = F.conv2d(act(b.bn2, y), b.conv2.weight, padding=1)
        if b.shortcut is not None:  # 'convdim', applied to the pre-activated input
            return z + F.conv2d(o1, b.shortcut.weight, stride=stride)
        return z + h

    h = F.conv2d(x, model.stem.weight, padding=1)
    for group, stride in ((model.group1, 1), (model.group2, 2), (model.group3, 2)):
        for i, b in enumerate(group):
            h = block(b, h, stride if i == 0 else 1)
    h = F.avg_pool2d(act(model.bn, h), 8)
    return F.linear(h.flatten(1), model.fc.weight, model.fc.bias)


def test_forward_matches_the_reference_functional_wrn() -> None:
    torch.manual_seed(0)
    model = create_model("wrn", depth=16, widen_factor=2)
    for m in model.modules():  # non-trivial BN statistics
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    model.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), _reference_forward(model, x), rtol=1e-4, atol=1e-4)


def test_small_wrn_trains_and_exposes_group_taps() -> None:
    model = create_model("wrn", depth=10, widen_factor=1, num_classes=7, in_channels=1)
    with TapRecorder(model, model.tap_names) as taps:
        out = model(torch.randn(2, 1, 32, 32))
        seen = {name: tuple(taps.get(name).shape) for name in model.tap_names}
    out.sum().backward()
    assert out.shape == (2, 7)
    assert model.tap_names == ("group1", "group2", "group3")
    assert seen == {"group1": (2, 16, 32, 32), "group2": (2, 32, 16, 16), "group3": (2, 64, 8, 8)}
    assert all(p.grad is not None for p in model.parameters())


def test_projection_shortcuts_are_named_shortcut() -> None:
    model = create_model("wrn", depth=10, widen_factor=2)
    one_by_one = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1)]
    assert one_by_one == ["group1.0.shortcut", "group2.0.shortcut", "group3.0.shortcut"]


def test_dropout_is_active_only_in_training() -> None:
    torch.manual_seed(0)
    model = create_model("wrn", depth=10, widen_factor=1, dropout=0.5)
    x = torch.randn(2, 3, 32, 32)
    model.train()
    assert not torch.allclose(model(x), model(x))
    model.eval()
    torch.testing.assert_close(model(x), model(x))


def test_bad_depth_is_refused() -> None:
    with pytest.raises(ValueError, match="6n\\+4"):
        create_model("wrn", depth=20, widen_factor=1)
