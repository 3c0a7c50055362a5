"""Where the run computes: resolving ``train.device`` and moving batches there."""

from __future__ import annotations

import torch

from ..errors import UserError


def resolve_device(name: str) -> torch.device:
    """``auto`` means the first visible CUDA device when there is one, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError("train.device asks for CUDA but no CUDA device is visible", key="train.device",
                        hint="use --set train.device=cpu (or auto)")
    return device


def to_device(images: torch.Tensor, targets: torch.Tensor, device: torch.device,
              channels_last: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Move a batch; NHWC images when ``channels_last`` (CUDA only: a no-op on the CPU)."""
    images, targets = images.to(device, non_blocking=True), targets.to(device, non_blocking=True)
    if channels_last and device.type == "cuda" and images.dim() == 4:
        images = images.contiguous(memory_format=torch.channels_last)
    return images, targets
