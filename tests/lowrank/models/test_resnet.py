"""CIFAR ResNet-18: parameter count, stage taps, shortcut naming."""

from __future__ import annotations

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

from lowrank.distill import TapRecorder
from lowrank.models import create_model


def test_resnet18_has_the_published_parameter_count() -> None:
    with torch.device("meta"):
        model = create_model("resnet18")
    assert sum(p.numel() for p in model.parameters()) == 11_173_962  # notes: 1.11740E+07


def test_resnet18_mult_adds_at_32x32() -> None:
    with torch.device("meta"):
        model = create_model("resnet18")
        with FlopCounterMode(display=False) as counter:
            model.eval()(torch.zeros(1, 3, 32, 32))
    # By hand: stem + layer1 (4 convs at 32x32) + three stages that each cost the same
    # (first strided conv, three 3x3 convs, 1x1 shortcut) + the linear layer.
    stage = 9 * 64 * 128 * 256 + 3 * 9 * 128 * 128 * 256 + 64 * 128 * 256
    expected = 9 * 3 * 64 * 1024 + 4 * 9 * 64 * 64 * 1024 + 3 * stage + 512 * 10
    assert counter.get_total_flops() == 2 * expected == 2 * 555_422_720


def test_small_resnet18_trains_and_exposes_stage_taps() -> None:
    model = create_model("resnet18", num_classes=5, width=8)
    with TapRecorder(model, model.tap_names) as taps:
        out = model(torch.randn(2, 3, 32, 32))
        shapes = {name: tuple(taps.get(name).shape) for name in model.tap_names}
    out.sum().backward()
    assert out.shape == (2, 5)
    assert shapes == {"layer1": (2, 8, 32, 32), "layer2": (2, 16, 16, 16), "layer3": (2, 32, 8, 8),
                      "layer4": (2, 64, 4, 4)}


def test_every_1x1_conv_is_a_named_shortcut() -> None:
    model = create_model("resnet18")
    one_by_one = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1)]
    assert one_by_one == ["layer2.0.shortcut.0", "layer3.0.shortcut.0", "layer4.0.shortcut.0"]
