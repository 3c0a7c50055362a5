"""A device-resident data path (``data.device``): the dataset lives on the device, batches are
gathered and augmented there, with no DataLoader workers and no host->device copy per step.

The fastest CIFAR trainers keep the whole (uint8) training set on the GPU and run the crop,
flip and cutout on whole batches; small models are otherwise bound by DataLoader workers.
Works for in-memory tensor datasets (``digits``, ``synthetic``: already normalised floats) and
for torchvision datasets that hold uint8 arrays (``cifar10``/``cifar100``/``mnist``: ``.data``
and ``.targets``; normalised with the mean/std of their ``Normalize`` transform), either
whole or as a :class:`~torch.utils.data.Subset` (the train/val split).

Order: ``randperm`` with the epoch's seeded CPU generator, exactly as a shuffling
DataLoader draws it, so without augmentation the batches equal the DataLoader's. The
augmentation draws from a device generator seeded from the same CPU generator, so a resumed
run sees the same crops. The augmentations follow ``data.augment`` with the semantics of
``lowrank.data`` (zero-padded crop, flip with p = 1/2, DeVries cutout after normalisation).
"""

from __future__ import annotations

import math
from typing import Any, Iterator

import torch
from torch.utils.data import Subset

from ..errors import UserError
from .shard import shard_bounds


def resident_tensors(dataset: Any, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(normalised float images N x C x H x W, labels N) of ``dataset`` on ``device``."""
    indices = None
    if isinstance(dataset, Subset):
        dataset, indices = dataset.dataset, torch.as_tensor(dataset.indices)
    if hasattr(dataset, "images") and hasattr(dataset, "labels"):  # lowrank.data.TensorImageDataset
        images, labels = dataset.images, dataset.labels
    elif hasattr(dataset, "data") and hasattr(dataset, "targets"):  # torchvision uint8 datasets
        data = torch.as_tensor(dataset.data)
        images = data.unsqueeze(1) if data.dim() == 3 else data.permute(0, 3, 1, 2)  # NHW / NHWC -> NCHW
        images = images.float() / 255.0
        mean, std = _normalise_of(getattr(dataset, "transform", None))
        if mean is not None:
            images = (images - torch.tensor(mean).view(1, -1, 1, 1)) / torch.tensor(std).view(1, -1, 1, 1)
        labels = torch.as_tensor(dataset.targets)
    else:
        raise UserError(f"data.device needs an in-memory dataset; {type(dataset).__name__} is not one",
                        key="data.device", hint="remove data.device to use the DataLoader")
    if indices is not None:
        images, labels = images[indices], labels[indices]
    return images.to(device).contiguous(), labels.to(device=device, dtype=torch.long)


def _normalise_of(transform: Any) -> tuple[Any, Any]:
    """The (mean, std) of the first ``Normalize`` inside a torchvision ``Compose``, else (None, None)."""
    for step in getattr(transform, "transforms", []) or []:
        if type(step).__name__ == "Normalize":
            return step.mean, step.std
    return None, None


def augment_batch(images: torch.Tensor, augment: Any, generator: torch.Generator) -> torch.Tensor:
    """Random crop (zero padding), horizontal flip and cutout of a whole N x C x H x W batch."""
    n, _, height, width = images.shape
    device = images.device
    if augment.random_crop and augment.crop_padding > 0:
        pad = augment.crop_padding
        padded = torch.nn.functional.pad(images, [pad] * 4)
        top = torch.randint(2 * pad + 1, (n,), device=device, generator=generator)
        left = torch.randint(2 * pad + 1, (n,), device=device, generator=generator)
        rows = (top[:, None] + torch.arange(height, device=device))[:, None, :, None]  # n,1,H,1
        cols = (left[:, None] + torch.arange(width, device=device))[:, None, None, :]  # n,1,1,W
        batch = torch.arange(n, device=device)[:, None, None, None]
        chans = torch.arange(images.shape[1], device=device)[None, :, None, None]
        images = padded[batch, chans, rows, cols]
    if augment.flip:
        flip = torch.rand(n, device=device, generator=generator) < 0.5
        images = torch.where(flip[:, None, None, None], images.flip(-1), images)
    if augment.cutout:
        length, half = augment.cutout, augment.cutout // 2
        cy = torch.randint(height, (n,), device=device, generator=generator)[:, None, None]
        cx = torch.randint(width, (n,), device=device, generator=generator)[:, None, None]
        ys = torch.arange(height, device=device)[None, :, None]
        xs = torch.arange(width, device=device)[None, None, :]
        # the same clipped square as lowrank.data.Cutout: [c - half, c + half + length % 2)
        inside = ((ys >= cy - half) & (ys < cy + half + length % 2) & (xs >= cx - half) & (xs < cx + half + length % 2))
        images = images.masked_fill(inside[:, None], 0.0)
    return images


class ResidentLoader:
    """Batches of a device-resident dataset; iterating it is one epoch (like a DataLoader)."""

    def __init__(self, dataset: Any, batch_size: int, device: torch.device, shuffle: bool = False,
                 generator: torch.Generator | None = None, augment: Any = None,
                 shard: tuple[int, int] = (0, 1)) -> None:
        self.images, self.labels = resident_tensors(dataset, device)
        self.rank, self.world = shard  # a data-parallel rank keeps its slice of each global batch
        self.batch_size, self.device, self.shuffle = batch_size, device, shuffle
        self.generator, self.augment = generator, augment
        self.device_generator = torch.Generator(device=device)

    def __len__(self) -> int:
        return math.ceil(len(self.labels) / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        count = len(self.labels)
        # a DataLoader first draws its workers' base seed from the generator, then the sampler's
        # permutation: draw the same, so the order is the DataLoader's
        torch.empty((), dtype=torch.int64).random_(generator=self.generator)
        if self.shuffle:
            order = torch.randperm(count, generator=self.generator).to(self.device)
        else:
            order = torch.arange(count, device=self.device)
        augmenting = self.augment is not None and (self.augment.random_crop or self.augment.flip or self.augment.cutout)
        if augmenting:  # seeded from the (per-epoch seeded) CPU generator: resume-exact
            self.device_generator.manual_seed(int(torch.randint(2**62, (1,), generator=self.generator)))
        for start in range(0, count, self.batch_size):
            index = order[start:start + self.batch_size]
            images = self.images[index]
            if augmenting:  # the whole global batch, as one process would: the same crops on W ranks
                images = augment_batch(images, self.augment, self.device_generator)
            if self.world > 1:
                first, stop = shard_bounds(len(index), self.rank, self.world)
                if first == stop:
                    continue
                images, index = images[first:stop], index[first:stop]
            yield images, self.labels[index]
