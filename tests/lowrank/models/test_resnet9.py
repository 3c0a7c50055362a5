"""DAWNBench ResNet-9: parameter count, logit scale, taps."""

from __future__ import annotations

import torch

from lowrank.distill import TapRecorder
from lowrank.models import create_model


def test_resnet9_parameter_count() -> None:
    with torch.device("meta"):
        model = create_model("resnet9")
    # convs 3x3 (3-64, 64-128, 2x128-128, 128-256, 256-512, 2x512-512) + 2 per BN channel + 512x10 linear
    convs = 9 * (3 * 64 + 64 * 128 + 2 * 128 * 128 + 128 * 256 + 256 * 512 + 2 * 512 * 512)
    bns = 2 * (64 + 128 + 2 * 128 + 256 + 512 + 2 * 512)
    assert sum(p.numel() for p in model.parameters()) == convs + bns + 512 * 10 == 6_573_120
    assert model.linear.bias is None


def test_logits_are_scaled_by_weight() -> None:
    torch.manual_seed(0)
    model = create_model("resnet9", width=8).eval()
    x = torch.randn(2, 3, 32, 32)
    scaled = model(x)
    model.weight = 1.0
    torch.testing.assert_close(scaled, model(x) * 0.125)


def test_small_resnet9_trains_and_exposes_taps() -> None:
    model = create_model("resnet9", num_classes=10, width=8)
    with TapRecorder(model, model.tap_names) as taps:
        out = model(torch.randn(2, 3, 32, 32))
        shapes = {name: tuple(taps.get(name).shape) for name in model.tap_names}
    out.sum().backward()
    assert out.shape == (2, 10)
    assert shapes == {"layer1": (2, 16, 16, 16), "layer2": (2, 32, 8, 8), "layer3": (2, 64, 4, 4)}
