"""Evaluation: mean cross-entropy and top-1/top-5 error of a model over a loader."""

from __future__ import annotations

import contextlib

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader

from ..amp import Precision
from .device import to_device
from .stop import StopFlag
from .tally import topk_hits


def topk_errors(logits: torch.Tensor, targets: torch.Tensor) -> tuple[int, int]:
    """Number of top-1 and top-5 mistakes in a batch (top-5 is top-k with k = min(5, classes))."""
    k = min(5, logits.shape[1])
    top = logits.topk(k, dim=1).indices
    hit = top.eq(targets.unsqueeze(1))
    return int((~hit[:, 0]).sum()), int((~hit.any(dim=1)).sum())


def top5_error(misses: float, total: int, classes: int | None) -> float | None:
    """Top-5 error in percent, or None with 5 classes or fewer (every label is in the top 5: the
    figure would be 0 whatever the model does, so it is not reported)."""
    if classes is not None and classes <= 5:
        return None
    return 100.0 * misses / total


def evaluate(model: nn.Module, loader: DataLoader, device: torch.device, stop: StopFlag,
             precision: Precision | None = None, channels_last: bool = False) -> dict[str, float]:
    """Mean cross-entropy and top-1/top-5 error (percent) of ``model`` over ``loader`` (err5 None
    for 5 classes or fewer, see :func:`top5_error`)."""
    model.eval()
    # sums stay on the device and are read once at the end (no host sync per batch)
    total, loss_sum, hits, classes = 0, torch.zeros((), dtype=torch.float64, device=device), None, None
    autocast = precision.autocast if precision is not None else contextlib.nullcontext
    with torch.no_grad():
        for images, targets in loader:
            stop.check()
            images, targets = to_device(images, targets, device, channels_last)
            with autocast():
                logits = model(images)
            if isinstance(logits, tuple):
                logits = logits[0]
            logits = logits.float()
            classes = logits.shape[1]
            loss_sum += F.cross_entropy(logits, targets, reduction="sum")
            batch_hits = topk_hits(logits, targets)
            hits = batch_hits if hits is None else hits + batch_hits
            total += len(targets)
    loss, *hit_counts = torch.cat([loss_sum.reshape(1), hits.double()]).tolist()
    miss1, miss5 = total - hit_counts[0], total - sum(hit_counts)
    return {"loss": loss / total, "err1": 100.0 * miss1 / total, "err5": top5_error(miss5, total, classes)}
