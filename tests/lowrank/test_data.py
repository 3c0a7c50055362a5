"""Datasets: the embedded digits split, synthetic data, cutout, and clear offline errors."""

from __future__ import annotations

import pytest
import torch

from lowrank.config import DataConfig
from lowrank.data import Cutout, RandomCropTensor, build_datasets
from lowrank.errors import DataError


def test_digits_fixed_disjoint_split():
    bundle = build_datasets(DataConfig(name="digits"))
    sizes = (len(bundle.train), len(bundle.val), len(bundle.test))
    assert sum(sizes) == 1797 and sizes == (1258, 180, 359)
    assert bundle.input_shape == (1, 8, 8) and bundle.num_classes == 10
    train = {tuple(bundle.train.images[i].flatten().tolist()) for i in range(len(bundle.train))}
    test = [tuple(bundle.test.images[i].flatten().tolist()) for i in range(len(bundle.test))]
    # the split is by index; a handful of digits images are exact duplicates in sklearn's data
    assert sum(t in train for t in test) < 5
    again = build_datasets(DataConfig(name="digits"))
    assert torch.equal(again.test.labels, bundle.test.labels)  # same split every time
    assert abs(float(bundle.train.images.mean())) < 1e-5      # normalised with train statistics


def test_synthetic_shapes_and_learnable_signal():
    bundle = build_datasets(DataConfig(name="synthetic", kwargs={"num_classes": 4, "channels": 2,
                                                                  "image_size": 6, "num_train": 40}))
    image, label = bundle.train[0]
    assert image.shape == (2, 6, 6) and 0 <= int(label) < 4 and len(bundle.train) == 40
    # nearest-template classification is far above chance: the classes are separable
    images, labels = bundle.test.images, bundle.test.labels
    means = torch.stack([bundle.train.images[bundle.train.labels == c].mean(0) for c in range(4)])
    predicted = ((images[:, None] - means[None]) ** 2).flatten(2).sum(-1).argmin(1)
    assert (predicted == labels).float().mean() > 0.9


def test_cutout_zeroes_a_square_clipped_at_the_border():
    torch.manual_seed(0)
    image = torch.ones(3, 16, 16)
    for _ in range(50):
        out = Cutout(6)(image)
        zeros = (out == 0).all(0)
        rows, cols = zeros.any(1).nonzero().flatten(), zeros.any(0).nonzero().flatten()
        assert 1 <= len(rows) <= 6 and 1 <= len(cols) <= 6
        assert int(zeros.sum()) == len(rows) * len(cols)  # one axis-aligned rectangle
        assert torch.equal(image, torch.ones(3, 16, 16))   # input untouched
    assert torch.equal(Cutout(0)(image), image)


def test_random_crop_preserves_shape_and_content_shift():
    torch.manual_seed(0)
    image = torch.arange(64.0).reshape(1, 8, 8)
    out = RandomCropTensor(1)(image)
    assert out.shape == image.shape
    nonzero = out[out != 0]
    assert set(nonzero.tolist()) <= set(image.flatten().tolist())


@pytest.mark.parametrize("name", ["cifar10", "cifar100", "mnist"])
def test_missing_torchvision_data_says_where_to_put_it(tmp_path, name):
    with pytest.raises(DataError) as caught:
        build_datasets(DataConfig(name=name, root=str(tmp_path / "empty")))
    message = str(caught.value)
    assert str(tmp_path / "empty") in message and "data.download=true" in message


def test_missing_imagenet_folders(tmp_path):
    with pytest.raises(DataError, match="train") as caught:
        build_datasets(DataConfig(name="imagenet", root=str(tmp_path)))
    assert "root/train/<wnid>" in str(caught.value)


def test_imagenet_imagefolder_with_real_files(tmp_path):
    from PIL import Image

    for split in ("train", "val"):
        for wnid in ("n01", "n02"):
            folder = tmp_path / split / wnid
            folder.mkdir(parents=True)
            for i in range(2):
                Image.new("RGB", (40, 30), color=(i * 60, 10, 200)).save(folder / f"{i}.JPEG")
    bundle = build_datasets(DataConfig(name="imagenet", root=str(tmp_path), kwargs={"image_size": 16, "resize": 20}))
    image, label = bundle.test[0]
    assert image.shape == (3, 16, 16) and bundle.num_classes == 2 and len(bundle.train) == 4
