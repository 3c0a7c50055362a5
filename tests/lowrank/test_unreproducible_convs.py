"""Convolutions no substitute can reproduce exactly stay dense, and dense convs are counted at the size
they really output (an even kernel with padding='same' pads asymmetrically; reflect padding is not
zero padding): a substitute would change the network's shapes or values."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

from lowrank.count import count_model
from lowrank.substitute import substitute


def _net(conv: nn.Conv2d) -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), conv, nn.Conv2d(6, 5, 3, padding=1))


@pytest.mark.parametrize("method", ["tt", "generic", "separable", "acdc", "hashed"])
@pytest.mark.parametrize("conv", [
    nn.Conv2d(4, 6, 4, padding="same"),
    nn.Conv2d(4, 6, (1, 2), padding="same"),
    nn.Conv2d(4, 6, 3, padding=1, padding_mode="reflect"),
    nn.Conv2d(4, 6, 3, padding=1, padding_mode="circular"),
], ids=["same-4x4", "same-1x2", "reflect", "circular"])
def test_an_unreproducible_conv_stays_dense_and_the_network_keeps_its_shapes(method, conv):
    model = _net(conv)
    x = torch.randn(2, 3, 8, 8)
    expected = model(x).shape
    report = substitute(model, method, {"tt": 0.5, "generic": 0.5, "acdc": 2, "hashed": 0.5}.get(method),
                        skip=[])
    assert isinstance(model[1], nn.Conv2d) and model[1] is conv
    assert any(layer.name == "1" and layer.reason for layer in report.skipped)
    assert model(x).shape == expected


def test_same_padding_with_an_odd_kernel_is_still_substituted():
    model = _net(nn.Conv2d(4, 6, 3, padding="same"))
    substitute(model, "tt", 0.5, skip=[])
    assert not isinstance(model[1], nn.Conv2d)
    assert model(torch.randn(1, 3, 8, 8)).shape == (1, 5, 8, 8)


def test_an_asymmetric_same_conv_is_counted_at_its_real_output_size():
    model = _net(nn.Conv2d(4, 6, 4, padding="same")).eval()
    with FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, 3, 8, 8))
    assert count_model(model, (3, 8, 8)).macs == counter.get_total_flops() // 2
