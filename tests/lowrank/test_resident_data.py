"""data.device: the dataset on the device, batches gathered and augmented there (CPU tests)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch.utils.data import Subset

from lowrank.config import load
from lowrank.rundir import RunDir
from lowrank.train import main
from lowrank.train.resident import ResidentLoader, augment_batch, resident_tensors
from train_helpers import final_events

REPO = Path(__file__).resolve().parents[2]
TINY = ["model.name=tiny_convnet", "model.kwargs.width=8", "data.name=synthetic", "data.batch_size=16",
        "data.kwargs={num_classes: 4, channels: 1, image_size: 8, num_train: 100, num_val: 32, num_test: 32}",
        "data.augment.random_crop=false", "train.epochs=2", "train.device=cpu"]


def run_with(overrides: list[str]) -> RunDir:
    run = RunDir.create(load(REPO / "presets" / "quickstart.yaml", TINY + overrides).to_dict())
    assert main([str(run.path)]) == 0, run.read_status().get("error")
    return run


def test_resident_path_trains_exactly_like_the_dataloader_without_augmentation(home):
    """Same randperm from the same per-epoch generator: identical batches, identical run."""
    assert final_events(run_with(["data.device=cpu"])) == final_events(run_with([]))


@pytest.mark.subprocess
def test_resident_path_with_augmentation_is_reproducible_and_differs(home):
    augmented = ["data.augment.random_crop=true", "data.augment.crop_padding=1", "data.augment.flip=true",
                 "data.augment.cutout=3", "data.device=cpu"]
    a, b, plain = run_with(augmented), run_with(augmented), run_with(["data.device=cpu"])
    assert final_events(a) == final_events(b)
    assert final_events(a) != final_events(plain)


def test_data_device_must_match_the_training_device(home):
    run = RunDir.create(load(REPO / "presets" / "quickstart.yaml", TINY + ["data.device=cuda"]).to_dict())
    assert main([str(run.path)]) == 1
    assert "data.device" in run.read_status()["error"]


def test_batched_augmentation_matches_the_per_sample_definitions():
    images = torch.arange(2 * 1 * 5 * 5, dtype=torch.float32).reshape(2, 1, 5, 5) + 1
    crop = SimpleNamespace(random_crop=True, crop_padding=2, flip=False, cutout=0)
    out = augment_batch(images, crop, torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(3)
    top, left = torch.randint(5, (2,), generator=g), torch.randint(5, (2,), generator=g)
    padded = torch.nn.functional.pad(images, [2] * 4)
    for i in range(2):
        assert torch.equal(out[i], padded[i, :, top[i]:top[i] + 5, left[i]:left[i] + 5])
    flip = SimpleNamespace(random_crop=False, crop_padding=0, flip=True, cutout=0)
    out = augment_batch(images, flip, torch.Generator().manual_seed(0))
    for i in range(2):
        assert torch.equal(out[i], images[i]) or torch.equal(out[i], images[i].flip(-1))
    cut = SimpleNamespace(random_crop=False, crop_padding=0, flip=False, cutout=3)
    out = augment_batch(images, cut, torch.Generator().manual_seed(1))
    g = torch.Generator().manual_seed(1)
    cy, cx = torch.randint(5, (2,), generator=g), torch.randint(5, (2,), generator=g)
    for i in range(2):  # lowrank.data.Cutout's clipped square [c - 1, c + 2)
        y0, y1, x0, x1 = max(0, cy[i] - 1), min(5, cy[i] + 2), max(0, cx[i] - 1), min(5, cx[i] + 2)
        expected = images[i].clone()
        expected[:, y0:y1, x0:x1] = 0
        assert torch.equal(out[i], expected)


def test_uint8_torchvision_style_dataset_is_normalised_like_totensor_normalize():
    tv = pytest.importorskip("torchvision.transforms")
    rng = np.random.default_rng(0)
    data = rng.integers(0, 256, (6, 4, 4, 3), dtype=np.uint8)  # CIFAR layout: N, H, W, C
    transform = tv.Compose([tv.ToTensor(), tv.Normalize((0.5, 0.4, 0.3), (0.2, 0.25, 0.3))])
    dataset = SimpleNamespace(data=data, targets=[1, 2, 3, 4, 5, 6], transform=transform)
    subset = Subset(dataset, [4, 1, 2])
    images, labels = resident_tensors(subset, torch.device("cpu"))
    assert labels.tolist() == [5, 2, 3]
    for row, index in enumerate([4, 1, 2]):
        torch.testing.assert_close(images[row], transform(data[index]))


def test_loader_order_is_the_dataloader_order():
    from lowrank.data import TensorImageDataset

    dataset = TensorImageDataset(torch.randn(10, 1, 2, 2), torch.arange(10))
    loader = ResidentLoader(dataset, 4, torch.device("cpu"), shuffle=True, generator=torch.Generator().manual_seed(5))
    reference = torch.utils.data.DataLoader(dataset, batch_size=4, shuffle=True,
                                            generator=torch.Generator().manual_seed(5))
    assert len(loader) == len(reference) == 3
    for (a_images, a_labels), (b_images, b_labels) in zip(loader, reference):
        assert torch.equal(a_labels, b_labels) and torch.equal(a_images, b_images)
