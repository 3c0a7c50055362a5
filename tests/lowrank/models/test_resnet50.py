"""CIFAR ResNet-50 (with the wide bottleneck of Go Wide, Then Narrow's teacher)."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from lowrank.distill import TapRecorder
from lowrank.models import create_model


def cifar_torchvision(builder) -> nn.Module:
    """torchvision's ImageNet network with the CIFAR stem (3x3 conv, no max-pool), 10 classes."""
    model = builder(weights=None, num_classes=10)
    model.conv1 = nn.Conv2d(3, 64, 3, padding=1, bias=False)
    return model


@pytest.mark.parametrize("wide,reference", [(1, "resnet50"), (2, "wide_resnet50_2")])
def test_parameter_count_matches_torchvision_with_a_cifar_stem(wide, reference) -> None:
    import torchvision.models as tvm

    with torch.device("meta"):
        ours = create_model("resnet50", wide=wide)
        theirs = cifar_torchvision(getattr(tvm, reference))
    count = sum(p.numel() for p in ours.parameters())
    assert count == sum(p.numel() for p in theirs.parameters())
    if wide == 1:
        assert count == 23_520_842  # kuangliu/pytorch-cifar ResNet50


def test_teacher_and_student_stage_outputs_have_the_same_widths() -> None:
    shapes = {}
    for wide in (1, 2):
        model = create_model("resnet50", width=4, wide=wide)
        with TapRecorder(model, model.tap_names) as taps:
            logits = model(torch.randn(2, 3, 16, 16))
            shapes[wide] = [tuple(feature.shape) for feature in taps.features]
        logits.sum().backward()
    assert shapes[1] == shapes[2] == [(2, 16, 16, 16), (2, 32, 8, 8), (2, 64, 4, 4), (2, 128, 2, 2)]
