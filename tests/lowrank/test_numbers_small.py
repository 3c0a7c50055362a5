"""Issue 11's smaller numbers: top-5 error with <= 5 classes, the DARTS data split, the solver's tie-break."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from torch.utils.data import DataLoader

from lowrank import data as data_mod
from lowrank.budget import _solve
from lowrank.config import load
from lowrank.data import TensorImageDataset, build_datasets, describe
from lowrank.errors import DataError
from lowrank.methods.registry import HyperParam, Method
from lowrank.train.evaluation import evaluate
from lowrank.train.stop import StopFlag


class Fixed(nn.Module):
    """Logits that put class 1 first for every input."""

    def __init__(self, classes: int) -> None:
        super().__init__()
        self.classes = classes
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, x):
        logits = -torch.arange(self.classes, dtype=torch.float32).repeat(len(x), 1)  # 1, then 0, 2, 3, 4, ...
        logits[:, 1] = 1.0
        return logits + self.dummy


@pytest.mark.parametrize("classes,err5", [(2, None), (5, None), (6, 50.0), (10, 50.0)])
def test_top5_error_is_null_with_five_classes_or_fewer(classes, err5):
    # half the labels are class 1 (always top-1), half the last class (outside the top 5 from 6 classes on)
    other = classes - 1 if classes > 2 else 0
    labels = torch.tensor([1, 1, other, other])
    loader = DataLoader(TensorImageDataset(torch.zeros(4, 1, 2, 2), labels), batch_size=2)
    metrics = evaluate(Fixed(classes), loader, torch.device("cpu"), StopFlag())
    assert metrics["err1"] == 50.0
    assert metrics["err5"] == err5


def _fake_torchvision(count_train: int, count_test: int):
    def fake(cls_name, config, root, train, transform):
        n = count_train if train else count_test
        return TensorImageDataset(torch.zeros(n, 3, 32, 32), torch.zeros(n, dtype=torch.long))
    return fake


@pytest.mark.parametrize("preset", ["presets/darts_teacher.yaml", "presets/darts_student.yaml"])
def test_darts_presets_train_on_all_50000_images_and_validate_on_the_test_set(monkeypatch, preset):
    monkeypatch.setattr(data_mod, "_torchvision_dataset", _fake_torchvision(50_000, 10_000))
    config = load(preset, [])
    bundle = build_datasets(config.data)
    assert len(bundle.train) == 50_000
    assert bundle.val is bundle.test and bundle.val_is_test
    assert describe(bundle)["val_is_test"] is True


def test_other_cifar_presets_still_hold_out_5000(monkeypatch):
    monkeypatch.setattr(data_mod, "_torchvision_dataset", _fake_torchvision(50_000, 10_000))
    bundle = build_datasets(load("presets/wrn28_10_teacher.yaml", []).data)
    assert (len(bundle.train), len(bundle.val), bundle.val_is_test) == (45_000, 5_000, False)


def test_negative_val_size_names_zero_as_the_lowest(monkeypatch):
    monkeypatch.setattr(data_mod, "_torchvision_dataset", _fake_torchvision(100, 10))
    config = load("presets/darts_teacher.yaml", ["data.kwargs.val_size=-1"])
    with pytest.raises(DataError, match="between 0 and 99"):
        build_datasets(config.data)


def test_float_solver_tie_goes_to_the_smaller_count_as_documented():
    hp = HyperParam("x", float, 0.0, 1.0, 0.5)
    method = Method("tie", "", build=lambda *a: None, params=lambda *a, **k: 0, macs=lambda *a, **k: 0, hp=hp)
    total = lambda value: 100 if value < 0.5 else 200  # noqa: E731 - target 150 is equidistant
    chosen, achieved = _solve(total, method, 150)
    assert achieved == 100 and chosen < 0.5
