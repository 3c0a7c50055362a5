"""Evaluation: mean cross-entropy and top-1/top-5 error of a model over a loader."""

from __future__ import annotations

import contextlib
import signal

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader

from ..amp import Precision
from .device import to_device
from ..distributed import SOLO, Solo
from .stop import StopFlag, StopRequested
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
             precision: Precision | None = None, channels_last: bool = False,
             group: Solo = SOLO) -> dict[str, float]:
    """Mean cross-entropy and top-1/top-5 error (percent) of ``model`` over ``loader`` (err5 None
    for 5 classes or fewer, see :func:`top5_error`).

    In a data-parallel run each rank evaluates its shard of the loader (lowrank.train.shard)
    and the sums are added over ``group``: the same figures as one process, 1/W of the time. A
    stop signal on any rank ends the pass on every rank (after its shard's current batch).
    """
    model.eval()
    # sums stay on the device and are read once at the end (no host sync per batch)
    total, loss_sum, hits, classes = 0, torch.zeros((), dtype=torch.float64, device=device), None, 0
    autocast = precision.autocast if precision is not None else contextlib.nullcontext
    stopped = False
    with torch.no_grad():
        for images, targets in loader:
            if group.distributed and stop.signum is not None:
                stopped = True  # told the others through the reduction below
                break
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
    hit1 = hits[0].double() if hits is not None else torch.zeros((), dtype=torch.float64, device=device)
    hit5 = hits.sum().double() if hits is not None else torch.zeros((), dtype=torch.float64, device=device)
    sums = torch.stack([loss_sum, hit1, hit5, torch.tensor(float(total), dtype=torch.float64, device=device),
                        torch.tensor(float(stopped), dtype=torch.float64, device=device)])
    loss, hit1, hit5, total, stops = group.sum(sums).tolist()
    classes = group.max_int(classes)
    if stops:
        stop.check()
        raise StopRequested(signal.SIGTERM)  # another rank was stopped: this one stops with it
    total = int(total)
    miss1, miss5 = total - int(hit1), total - int(hit5)
    return {"loss": loss / total, "err1": 100.0 * miss1 / total, "err5": top5_error(miss5, total, classes)}
