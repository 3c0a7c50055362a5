"""Are a dataset's files on disk? Checked before a run is created, without reading them.

The worker finds a missing dataset only after its run directory exists; this answers the
same question up front (``lowrank run``, the console's launch dialog) from the layout
torchvision expects, touching no data and importing no torch. With ``data.download``
the files may legitimately be absent (torchvision fetches them), so nothing is checked.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from .errors import DataError


def _files(*names: str) -> Callable[[Path], list[Path]]:
    return lambda root: [root / name for name in names]


# dataset -> (the name torchvision uses, the layout users read in the hint, files that must exist)
_LAYOUTS: dict[str, tuple[str, str, Callable[[Path], list[Path]]]] = {
    "mnist": ("MNIST", "MNIST/raw/*-ubyte", _files(*(f"MNIST/raw/{name}" for name in (
        "train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")))),
    "cifar10": ("CIFAR10", "cifar-10-batches-py/", _files(*(f"cifar-10-batches-py/{name}" for name in (
        "data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch")))),
    "cifar100": ("CIFAR100", "cifar-100-python/", _files("cifar-100-python/train", "cifar-100-python/test")),
}


def check_dataset_files(data) -> None:
    """Raise :class:`DataError` (key ``data.root``) when ``data`` (a DataConfig) names files that are absent."""
    root = Path(data.root).expanduser()
    if data.name == "imagenet":
        for split in ("train", "val"):
            if not (root / split).is_dir():
                raise DataError(f"ImageNet split folder {root / split} not found", key="data.root",
                                hint="expected root/train/<wnid>/*.JPEG and root/val/<wnid>/*.JPEG "
                                     "(ImageNet cannot be downloaded automatically)")
        return
    if data.name not in _LAYOUTS or data.download:
        return  # built in memory (digits, synthetic), or torchvision will download it
    name, layout, files = _LAYOUTS[data.name]
    missing = [path for path in files(root) if not path.is_file()]
    if missing:
        raise DataError(f"{name} not found under {root} (no {missing[0].relative_to(root)})", key="data.root",
                        hint=f"put the files there ({layout}), point data.root at them, or let torchvision "
                             f"download them with --set data.download=true (needs internet)")
