"""WRN-50-2: torchvision's wide_resnet50_2, local weights only."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torchvision.models import wide_resnet50_2

from lowrank.errors import UserError
from lowrank.models import create_model


def test_matches_torchvision_parameter_count_and_names() -> None:
    with torch.device("meta"):
        model = create_model("wrn50_2")
        reference = wide_resnet50_2(weights=None)
    assert sum(p.numel() for p in model.parameters()) == 68_883_240
    assert list(model.state_dict()) == list(reference.state_dict())
    names = dict(model.named_modules())
    assert all(name in names for name in model.tap_names) and model.tap_names == ("layer1", "layer2", "layer3",
                                                                                    "layer4")
    one_by_one_projections = [n for n, m in model.named_modules()
                              if isinstance(m, torch.nn.Conv2d) and m.stride == (2, 2) and m.kernel_size == (1, 1)]
    assert one_by_one_projections and all("downsample" in n for n in one_by_one_projections)


def test_other_class_and_channel_counts() -> None:
    with torch.device("meta"):
        model = create_model("wrn50_2", num_classes=10, in_channels=1)
    assert model.fc.out_features == 10 and model.conv1.in_channels == 1


def test_missing_weights_file_is_a_user_error(tmp_path: Path) -> None:
    with torch.device("meta"), pytest.raises(UserError, match="not found"):
        create_model("wrn50_2", weights_path=str(tmp_path / "nope.pth"))


@pytest.mark.slow
def test_weights_round_trip_and_mismatch(tmp_path: Path) -> None:
    torch.manual_seed(0)
    source = create_model("wrn50_2", num_classes=10).eval()
    path = tmp_path / "wrn50_2.pth"
    torch.save(source.state_dict(), path)
    loaded = create_model("wrn50_2", num_classes=10, weights_path=str(path)).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), source(x))
    with pytest.raises(UserError, match="shape mismatches: fc.weight"):
        create_model("wrn50_2", num_classes=1000, weights_path=str(path))
