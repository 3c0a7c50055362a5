"""dense, separable, generic, shuffle, hashed, sep_hashed: structure and mult-adds against
``torch.utils.flop_counter`` (which counts 2 FLOPs per mult-add of every conv it sees)."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

from lowrank.methods import ConvSpec, get_method, list_methods
from lowrank.methods.generic import rank
from lowrank.methods.shuffle import channel_shuffle, effective_groups

SPECS = [
    ConvSpec(8, 16, (3, 3), (1, 1), (1, 1)),
    ConvSpec(16, 8, (3, 3), (2, 2), (1, 1), bias=True),
    ConvSpec(12, 24, (1, 1)),
    ConvSpec(12, 24, (1, 1), (2, 2), (1, 1)),
    ConvSpec(6, 9, (5, 3), (2, 1), (2, 1), (1, 1)),
    ConvSpec(8, 8, (3, 3), (1, 1), (2, 2), (2, 2)),
]
# methods whose forward is only convolutions, so FlopCounterMode sees exactly the declared mult-adds
CONV_ONLY = {"dense": None, "separable": None, "generic": 0.3, "shuffle": 3, "hashed": 0.2, "sep_hashed": 0.2}


def counted_macs(module: nn.Module, x: torch.Tensor) -> int:
    with FlopCounterMode(display=False) as counter:
        module(x)
    return counter.get_total_flops() // 2


@pytest.mark.parametrize("name", sorted(CONV_ONLY))
@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("in_hw", [(9, 9), (16, 12)])
def test_macs_match_flop_counter(name, spec, in_hw):
    method = get_method(name)
    module = method.build(spec, CONV_ONLY[name])
    x = torch.randn(1, spec.in_channels, *in_hw)
    assert method.macs(spec, CONV_ONLY[name], in_hw) == counted_macs(module, x)


def test_dense_is_the_conv_itself_and_keeps_groups():
    spec = ConvSpec(8, 16, (3, 3), (1, 1), (1, 1), groups=4, bias=True)
    module = get_method("dense").build(spec)
    assert module.conv.groups == 4
    assert get_method("dense").params(spec) == spec.dense_params == 16 * 2 * 9 + 16
    x = torch.randn(1, 8, 6, 6)
    assert get_method("dense").macs(spec, None, (6, 6)) == 36 * 16 * 2 * 9 == counted_macs(module, x)


@pytest.mark.parametrize("name", [m.name for m in list_methods() if m.name != "dense"])  # every method, new ones too
def test_compressed_methods_refuse_grouped_convs(name):
    with pytest.raises(ValueError, match="groups"):
        get_method(name).build(ConvSpec(8, 8, (3, 3), padding=(1, 1), groups=8), get_method(name).hp.default
                               if get_method(name).hp else None)


def test_separable_is_depthwise_then_pointwise():
    spec = ConvSpec(8, 16, (3, 3), (2, 2), (1, 1))
    module = get_method("separable").build(spec)
    assert module.depthwise.groups == 8 and module.depthwise.stride == (2, 2)
    x = torch.randn(2, 8, 10, 10)
    expected = module.pw(nn.functional.conv2d(x, module.depthwise.weight, None, 2, 1, 1, 8))
    torch.testing.assert_close(module(x), expected)


def test_strided_1x1_matches_a_strided_conv_with_the_same_weight():
    spec = ConvSpec(6, 12, (1, 1), (2, 2), (1, 1), bias=True)
    module = get_method("separable").build(spec)
    conv = nn.Conv2d(6, 12, 1, 2, 1, bias=True)
    conv.load_state_dict({"weight": module.pw.weight, "bias": module.pw.bias})
    x = torch.randn(2, 6, 9, 8)
    torch.testing.assert_close(module(x), conv(x))


def test_generic_rank_formula_and_product_rank():
    spec = ConvSpec(20, 40, (1, 1))
    assert rank(spec, 0.25) == 5
    assert rank(spec, 0.001) == 1
    assert rank(spec, 1.0) == 20
    assert rank(spec, 0.125) == 3  # 2.5 rounds half up
    module = get_method("generic").build(spec, 0.25)
    product = module.expand.weight[:, :, 0, 0] @ module.reduce.weight[:, :, 0, 0]
    assert torch.linalg.matrix_rank(product) == 5


def test_shuffle_groups_reduce_to_a_common_divisor():
    assert effective_groups(ConvSpec(24, 36, (1, 1)), 8) == 6   # gcd 12: largest divisor <= 8
    assert effective_groups(ConvSpec(7, 14, (1, 1)), 4) == 1    # gcd 7: nothing between 1 and 4
    assert effective_groups(ConvSpec(64, 64, (1, 1)), 64) == 64
    module = get_method("shuffle").build(ConvSpec(24, 36, (3, 3), padding=(1, 1)), 8)
    assert module.gconv1.groups == module.gconv2.groups == 6
    assert module.gconv1.out_channels == 36  # mid = out


def test_channel_shuffle_interleaves_groups():
    x = torch.arange(6.0).view(1, 6, 1, 1)
    assert channel_shuffle(x, 2).flatten().tolist() == [0, 3, 1, 4, 2, 5]
    assert channel_shuffle(x, 3).flatten().tolist() == [0, 2, 4, 1, 3, 5]


def test_shuffle_direction_is_declared_negative():
    method = get_method("shuffle")
    assert method.hp.direction == -1
    spec = ConvSpec(64, 64, (3, 3), padding=(1, 1))
    assert method.params(spec, 1) > method.params(spec, 2) > method.params(spec, 8)
    assert method.params(spec, 1) == 2 * 64 * 64 + 64 * 9


def test_methods_train_a_step_on_cpu():
    """One SGD step on a regression target lowers the loss for every method built here."""
    spec = ConvSpec(8, 8, (3, 3), (1, 1), (1, 1), bias=True)
    torch.manual_seed(0)
    x, target = torch.randn(4, 8, 6, 6), torch.randn(4, 8, 6, 6)
    for name, hp in {**CONV_ONLY, "acdc": 2}.items():
        module = get_method(name).build(spec, hp)
        optimizer = torch.optim.SGD(module.parameters(), lr=0.05)
        before = nn.functional.mse_loss(module(x), target)
        before.backward()
        optimizer.step()
        after = nn.functional.mse_loss(module(x), target)
        assert after < before, name
