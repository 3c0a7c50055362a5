"""Datasets and transforms, behind a registry: ``digits``, ``synthetic``, ``mnist``,
``cifar10``, ``cifar100`` and ``imagenet``.

``digits`` is scikit-learn's bundled 8x8 handwritten digits (1,797 real images that
ship with the package), split once into fixed train/val/test sets, so the quickstart
and tests need no download. torchvision datasets download only when
``data.download: true``; missing files give one message saying where to put them.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch.utils.data import Dataset, Subset

from .errors import DataError
from .registry import Registry

# Channel statistics used for normalisation (the standard figures for each dataset).
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)
MNIST_MEAN, MNIST_STD = (0.1307,), (0.3081,)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@dataclass
class DataBundle:
    """Train/val/test datasets with the shape facts a model needs."""

    train: Dataset
    val: Dataset
    test: Dataset
    num_classes: int
    in_channels: int
    image_size: int
    val_is_test: bool = False  # no held-out split: validation runs on the test set (data.kwargs.val_size: 0)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.in_channels, self.image_size, self.image_size)


# ---------------------------------------------------------------- transforms


class Cutout:
    """Zero one random ``length`` x ``length`` square (clipped at the border) of a CHW tensor.

    DeVries & Taylor 2017, as in the DARTS training code: the centre is uniform over
    the image, so the square may be partly outside. Uses torch's global RNG, which the
    trainer checkpoints, so resumed runs see the same squares.
    """

    def __init__(self, length: int) -> None:
        self.length = length

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        if self.length <= 0:
            return image
        _, height, width = image.shape
        cy = int(torch.randint(height, (1,)))
        cx = int(torch.randint(width, (1,)))
        half = self.length // 2
        y0, y1 = max(0, cy - half), min(height, cy + half + self.length % 2)
        x0, x1 = max(0, cx - half), min(width, cx + half + self.length % 2)
        image = image.clone()
        image[:, y0:y1, x0:x1] = 0
        return image

    def __repr__(self) -> str:
        return f"Cutout(length={self.length})"


class RandomCropTensor:
    """Zero-pad a CHW tensor by ``padding`` and crop back to its size at a random offset."""

    def __init__(self, padding: int) -> None:
        self.padding = padding

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        if self.padding <= 0:
            return image
        _, height, width = image.shape
        padded = torch.nn.functional.pad(image, [self.padding] * 4)
        top = int(torch.randint(2 * self.padding + 1, (1,)))
        left = int(torch.randint(2 * self.padding + 1, (1,)))
        return padded[:, top:top + height, left:left + width]


class RandomFlipTensor:
    """Flip a CHW tensor horizontally with probability 1/2."""

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        return image.flip(-1) if bool(torch.rand(()) < 0.5) else image


def tensor_augmentations(augment) -> list[Callable[[torch.Tensor], torch.Tensor]]:
    """The augmentation pipeline (on normalised CHW tensors) a config asks for."""
    steps: list[Callable] = []
    if augment.random_crop:
        steps.append(RandomCropTensor(augment.crop_padding))
    if augment.flip:
        steps.append(RandomFlipTensor())
    if augment.cutout:
        steps.append(Cutout(augment.cutout))
    return steps


class Compose:
    """Apply callables in order (kept tiny so tensor datasets don't need torchvision)."""

    def __init__(self, steps: list[Callable]) -> None:
        self.steps = steps

    def __call__(self, value):
        for step in self.steps:
            value = step(value)
        return value


class TensorImageDataset(Dataset):
    """In-memory images (N, C, H, W) and labels with an optional per-sample transform."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform: Callable | None = None) -> None:
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        image = self.images[index]
        if self.transform is not None:
            image = self.transform(image)
        return image, self.labels[index]


# ---------------------------------------------------------------- registry

DatasetBuilder = Callable[..., DataBundle]
_REGISTRY: Registry[DatasetBuilder] = Registry("dataset")


def register_dataset(name: str) -> Callable[[DatasetBuilder], DatasetBuilder]:
    """Decorator storing a dataset builder ``(data_config, **kwargs) -> DataBundle``."""
    return _REGISTRY.register(name)


def list_datasets() -> list[str]:
    """Names of the registered datasets."""
    return _REGISTRY.names()


def dataset_kwargs(name: str) -> dict[str, inspect.Parameter]:
    """The dataset-specific ``data.kwargs`` a builder accepts."""
    params = _REGISTRY.parameters(name)
    params.pop("config", None)
    return params


def build_datasets(config) -> DataBundle:
    """Build the datasets named by ``config.data`` (an :class:`~lowrank.config.DataConfig`)."""
    try:
        builder = _REGISTRY.get(config.name)
    except KeyError:
        raise DataError(f"unknown dataset {config.name!r}", key="data.name",
                        hint=f"known datasets: {', '.join(list_datasets())}") from None
    return builder(config, **config.kwargs)


def fixed_split(count: int, sizes: tuple[int, ...], seed: int) -> list[list[int]]:
    """Split range(count) into consecutive pieces of ``sizes`` after a seeded permutation."""
    order = torch.randperm(count, generator=torch.Generator().manual_seed(seed)).tolist()
    pieces, start = [], 0
    for size in sizes:
        pieces.append(order[start:start + size])
        start += size
    return pieces


# ---------------------------------------------------------------- digits & synthetic


@register_dataset("digits")
def digits(config, val_fraction: float = 0.1, test_fraction: float = 0.2, split_seed: int = 0) -> DataBundle:
    """scikit-learn's 8x8 digits (1,797 images, 10 classes), split into fixed train/val/test.

    With the defaults: 1,258 train, 180 val, 359 test. Pixels (0..16) are scaled to
    [0, 1] and normalised with the training set's mean and standard deviation.
    """
    from sklearn.datasets import load_digits

    raw = load_digits()
    images = torch.tensor(raw.images, dtype=torch.float32).unsqueeze(1) / 16.0
    labels = torch.tensor(raw.target, dtype=torch.long)
    count = len(labels)
    n_test = int(round(test_fraction * count))
    n_val = int(round(val_fraction * count))
    test_idx, val_idx, train_idx = fixed_split(count, (n_test, n_val, count - n_test - n_val), split_seed)
    mean, std = images[train_idx].mean(), images[train_idx].std()
    images = (images - mean) / std
    train_tf = Compose(tensor_augmentations(config.augment))
    return DataBundle(
        train=TensorImageDataset(images[train_idx], labels[train_idx], train_tf),
        val=TensorImageDataset(images[val_idx], labels[val_idx]),
        test=TensorImageDataset(images[test_idx], labels[test_idx]),
        num_classes=10, in_channels=1, image_size=8,
    )


@register_dataset("synthetic")
def synthetic(config, num_classes: int = 10, channels: int = 3, image_size: int = 32,
              num_train: int = 512, num_val: int = 128, num_test: int = 128,
              noise: float = 1.0, seed: int = 0) -> DataBundle:
    """Class-conditional Gaussian images: a fixed random template per class plus noise.

    Learnable (the templates differ) but made on the fly, for tests and benchmarks of
    any shape; ``noise`` sets the difficulty.
    """
    generator = torch.Generator().manual_seed(seed)
    templates = torch.randn(num_classes, channels, image_size, image_size, generator=generator)

    def make(count: int) -> TensorImageDataset:
        labels = torch.randint(num_classes, (count,), generator=generator)
        images = templates[labels] + noise * torch.randn(count, channels, image_size, image_size, generator=generator)
        return TensorImageDataset(images, labels)

    train, val, test = make(num_train), make(num_val), make(num_test)
    train.transform = Compose(tensor_augmentations(config.augment))
    return DataBundle(train, val, test, num_classes, channels, image_size)


# ---------------------------------------------------------------- torchvision datasets


def _missing_message(name: str, root: Path, layout: str) -> DataError:
    return DataError(
        f"{name} not found under {root}", key="data.root",
        hint=f"put the files there ({layout}), point data.root at them, "
             f"or let torchvision download them with --set data.download=true (needs internet)",
    )


def _torchvision_dataset(cls_name: str, config, root: Path, train: bool, transform):
    import torchvision

    cls = getattr(torchvision.datasets, cls_name)
    try:
        return cls(root=str(root), train=train, download=config.download, transform=transform)
    except RuntimeError as error:  # torchvision: "Dataset not found or corrupted"
        layouts = {"MNIST": "MNIST/raw/*-ubyte[.gz]", "CIFAR10": "cifar-10-batches-py/",
                   "CIFAR100": "cifar-100-python/"}
        raise _missing_message(cls_name, root, layouts.get(cls_name, "torchvision layout")) from error
    except OSError as error:  # download attempted without network
        raise DataError(f"could not download {cls_name} to {root}: {error}", key="data.download",
                        hint="this machine looks offline: copy the files into data.root and set data.download=false") from error


def _split_train_val(train_full: Dataset, eval_full: Dataset, val_size: int, split_seed: int,
                     test: Dataset | None = None) -> tuple[Dataset, Dataset]:
    """Hold out ``val_size`` images of the training set (evaluated without augmentation).

    ``val_size`` 0 (given ``test``): train on every training image and validate on the test set,
    the DARTS protocol (its train.py trains on all 50,000 CIFAR images and reports the test set
    each epoch).
    """
    count = len(train_full)
    if val_size == 0 and test is not None:
        return train_full, test
    if not 0 < val_size < count:
        low = 0 if test is not None else 1
        raise DataError(f"val_size must be between {low} and {count - 1}, got {val_size}", key="data.kwargs.val_size",
                        hint="0 trains on every training image and validates on the test set" if low == 0 else None)
    val_idx, train_idx = fixed_split(count, (val_size, count - val_size), split_seed)
    return Subset(train_full, train_idx), Subset(eval_full, val_idx)


def _vision(config, cls_name: str, mean, std, image_size: int, channels: int, classes: int,
            val_size: int, split_seed: int) -> DataBundle:
    import torchvision.transforms as T

    root = Path(config.root).expanduser()
    normalise = [T.ToTensor(), T.Normalize(mean, std)]
    train_steps = []
    if config.augment.random_crop:
        train_steps.append(T.RandomCrop(image_size, padding=config.augment.crop_padding))
    if config.augment.flip:
        train_steps.append(T.RandomHorizontalFlip())
    train_steps += normalise
    if config.augment.cutout:
        train_steps.append(Cutout(config.augment.cutout))
    train_full = _torchvision_dataset(cls_name, config, root, True, T.Compose(train_steps))
    eval_full = _torchvision_dataset(cls_name, config, root, True, T.Compose(normalise))
    test = _torchvision_dataset(cls_name, config, root, False, T.Compose(normalise))
    train, val = _split_train_val(train_full, eval_full, val_size, split_seed, test)
    return DataBundle(train, val, test, classes, channels, image_size, val_is_test=val is test)


@register_dataset("cifar10")
def cifar10(config, val_size: int = 5000, split_seed: int = 0) -> DataBundle:
    """CIFAR-10 (torchvision); ``val_size`` training images are held out for validation (0: none,
    validation on the test set)."""
    return _vision(config, "CIFAR10", CIFAR10_MEAN, CIFAR10_STD, 32, 3, 10, val_size, split_seed)


@register_dataset("cifar100")
def cifar100(config, val_size: int = 5000, split_seed: int = 0) -> DataBundle:
    """CIFAR-100 (torchvision); ``val_size`` training images are held out for validation."""
    return _vision(config, "CIFAR100", CIFAR100_MEAN, CIFAR100_STD, 32, 3, 100, val_size, split_seed)


@register_dataset("mnist")
def mnist(config, val_size: int = 5000, split_seed: int = 0) -> DataBundle:
    """MNIST (torchvision); ``val_size`` training images are held out for validation."""
    return _vision(config, "MNIST", MNIST_MEAN, MNIST_STD, 28, 1, 10, val_size, split_seed)


@register_dataset("imagenet")
def imagenet(config, image_size: int = 224, resize: int = 256, val_size: int = 0, split_seed: int = 0) -> DataBundle:
    """ImageNet from ``root/train`` and ``root/val`` class folders (torchvision ImageFolder).

    Standard transforms: RandomResizedCrop + flip for training; Resize(256) +
    CenterCrop(224) for evaluation. The official validation set is the test set; with
    ``val_size`` > 0 that many training images are held out as validation, otherwise
    validation uses the official validation set too.
    """
    import torchvision.transforms as T
    from torchvision.datasets import ImageFolder

    root = Path(config.root).expanduser()
    for split in ("train", "val"):
        if not (root / split).is_dir():
            raise DataError(f"ImageNet split folder {root / split} not found", key="data.root",
                            hint="expected root/train/<wnid>/*.JPEG and root/val/<wnid>/*.JPEG "
                                 "(ImageNet cannot be downloaded automatically)")
    normalise = [T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    train_steps = [T.RandomResizedCrop(image_size)] + ([T.RandomHorizontalFlip()] if config.augment.flip else [])
    train_steps += normalise + ([Cutout(config.augment.cutout)] if config.augment.cutout else [])
    eval_tf = T.Compose([T.Resize(resize), T.CenterCrop(image_size)] + normalise)
    train_full = ImageFolder(str(root / "train"), T.Compose(train_steps))
    test = ImageFolder(str(root / "val"), eval_tf)
    if val_size:
        train, val = _split_train_val(train_full, ImageFolder(str(root / "train"), eval_tf), val_size, split_seed)
    else:
        train, val = train_full, test
    return DataBundle(train, val, test, len(train_full.classes), 3, image_size, val_is_test=val is test)


def loader_batches(dataset_len: int, batch_size: int, drop_last: bool) -> int:
    """Number of batches per epoch (for progress and ETA)."""
    return dataset_len // batch_size if drop_last else math.ceil(dataset_len / batch_size)


def describe(bundle: DataBundle) -> dict[str, Any]:
    """Sizes and shapes, for the run's start event."""
    return {"train": len(bundle.train), "val": len(bundle.val), "test": len(bundle.test),
            "num_classes": bundle.num_classes, "input_shape": list(bundle.input_shape),
            "val_is_test": bundle.val_is_test}


# Shapes of each dataset without loading it (for counting and planning on meta tensors).
_SHAPES = {"digits": (10, (1, 8, 8)), "mnist": (10, (1, 28, 28)), "cifar10": (10, (3, 32, 32)),
           "cifar100": (100, (3, 32, 32))}


def dataset_shape(config) -> tuple[int, tuple[int, int, int]]:
    """(num_classes, (C, H, W)) of the dataset ``config`` names, without reading any data."""
    if config.name == "synthetic":
        params = dataset_kwargs("synthetic")
        get = lambda key: config.kwargs.get(key, params[key].default)  # noqa: E731
        size = get("image_size")
        return get("num_classes"), (get("channels"), size, size)
    if config.name == "imagenet":
        size = config.kwargs.get("image_size", dataset_kwargs("imagenet")["image_size"].default)
        return 1000, (3, size, size)
    return _SHAPES[config.name]
