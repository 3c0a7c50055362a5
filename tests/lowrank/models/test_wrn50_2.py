"""WRN-50-2: torchvision's wide_resnet50_2 (names, shapes, outputs), built without importing torchvision;
local weights only."""

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


def test_shapes_and_outputs_equal_torchvision_with_its_weights() -> None:
    torch.manual_seed(0)
    reference = wide_resnet50_2(weights=None, num_classes=10).eval()
    for module in reference.modules():  # non-trivial BN statistics, so the eval outputs test them too
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1), module.running_var.uniform_(0.5, 1.5)
            module.weight.data.uniform_(0.5, 1.5), module.bias.data.uniform_(-0.1, 0.1)
    model = create_model("wrn50_2", num_classes=10).eval()
    assert {k: v.shape for k, v in model.state_dict().items()} == \
        {k: v.shape for k, v in reference.state_dict().items()}
    model.load_state_dict(reference.state_dict())
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x), rtol=1e-4, atol=1e-5)
    assert [n for n, _ in model.named_modules()] == [n for n, _ in reference.named_modules()]


def test_initialisation_follows_torchvision() -> None:
    """kaiming_normal_(fan_out) convolutions, BN at 1 and 0: the spread of each weight as torchvision's."""
    torch.manual_seed(0)
    ours = dict(create_model("wrn50_2").named_parameters())
    theirs = dict(wide_resnet50_2(weights=None).named_parameters())
    for name in ("conv1.weight", "layer3.2.conv2.weight", "layer4.0.downsample.0.weight", "layer1.0.bn1.weight",
                 "layer2.1.bn3.bias", "fc.weight"):
        assert ours[name].std().item() == pytest.approx(theirs[name].std().item(), rel=0.05, abs=1e-6), name
        assert ours[name].mean().item() == pytest.approx(theirs[name].mean().item(), abs=0.05 * max(
            theirs[name].std().item(), 1e-3)), name


@pytest.mark.subprocess
def test_counting_it_imports_no_torchvision() -> None:
    """torchvision's import (1.6 s) was most of ``lowrank count`` on this preset."""
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[3]
    code = ("import sys, torch; from lowrank.models import create_model\n"
            "with torch.device('meta'): m = create_model('wrn50_2')\n"
            "print(sum(p.numel() for p in m.parameters()), 'torchvision' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=repo, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["68883240", "False"]


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
