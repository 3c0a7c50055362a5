"""Per-step training figures kept on the device and read only at logging steps.

Reading a loss with ``float(loss)`` or an error count with ``int(...)`` waits for the
device to finish the step; doing it every step keeps a GPU idle between steps (issue 12).
:class:`Tally` collects each step's mean loss, top-k hit counts and loss parts as device
tensors and reads them in one transfer when a ``step`` line is due; the non-finite-loss
check happens there too, and still names the exact step that went bad.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import torch


def topk_hits(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Hits of each rank 0..k-1 over the batch (k = min(5, classes)), on the device, no sync.

    Top-k indices are distinct, so a sample hits at most one rank: top-1 misses are
    ``n - hits[0]`` and top-5 misses ``n - hits.sum()``.
    """
    with torch.no_grad():
        return logits.topk(min(5, logits.shape[1]), dim=1).indices.eq(targets.unsqueeze(1)).sum(dim=0)


@dataclass
class Window:
    """The figures of the steps since the last read: sums over samples, host numbers."""

    seen: int = 0
    loss_sum: float = 0.0
    miss1: int = 0
    miss5: int = 0
    parts: dict[str, float] = field(default_factory=dict)
    bad_step: int | None = None  # offset (0-based) of the first step whose loss was not finite
    bad_loss: float | None = None

    def add(self, other: "Window") -> None:
        """Fold ``other`` into this one (the epoch's running totals)."""
        self.seen += other.seen
        self.loss_sum += other.loss_sum
        self.miss1 += other.miss1
        self.miss5 += other.miss5
        for key, value in other.parts.items():
            self.parts[key] = self.parts.get(key, 0.0) + value


class Tally:
    """Device-side per-step figures; :meth:`read` syncs once and returns a :class:`Window`.

    A step's predictions are kept as its (detached) logits and targets, one pair per batch (or
    micro-batch under accumulation), and ranked in one batched top-k when :data:`FOLD_STEPS`
    pairs are pending or at :meth:`read`: one top-k per window instead of four small kernels per
    step (on a small CPU model those were ~1 % of the step). The held logits are bounded by
    FOLD_STEPS (micro-)batches of ``batch x classes`` values.
    """

    FOLD_STEPS = 32

    def __init__(self) -> None:
        self._losses: list[torch.Tensor] = []
        self._pending: list[tuple[torch.Tensor, torch.Tensor]] = []  # (logits, targets) not yet ranked
        self._hits: torch.Tensor | None = None  # summed topk_hits of the folded predictions
        self._counts: list[int] = []
        self._parts: dict[str, list[torch.Tensor]] = {}
        self._part_counts: dict[str, list[int]] = {}

    def add(self, loss: torch.Tensor, predictions: list[tuple[torch.Tensor, torch.Tensor]], count: int,
            parts: dict[str, torch.Tensor]) -> None:
        """Record one step (no sync): its mean loss, its (logits, targets) pairs (one per
        micro-batch), batch size and loss parts."""
        self._losses.append(loss.detach())  # 0-dim; cast and stacked at read time
        self._pending.extend((logits.detach(), targets) for logits, targets in predictions)
        self._counts.append(count)
        for key, value in parts.items():
            self._parts.setdefault(key, []).append(torch.as_tensor(value).detach())
            self._part_counts.setdefault(key, []).append(count)
        if len(self._pending) >= self.FOLD_STEPS:
            self._fold()

    def _fold(self) -> None:
        """Rank the pending predictions in one top-k and add their hits (on the device)."""
        if not self._pending:
            return
        if len(self._pending) == 1:
            logits, targets = self._pending[0]
        else:
            logits = torch.cat([logits for logits, _ in self._pending])
            targets = torch.cat([targets for _, targets in self._pending])
        hits = topk_hits(logits, targets)
        self._hits = hits if self._hits is None else self._hits + hits
        self._pending = []

    def __len__(self) -> int:
        return len(self._counts)

    def read(self, reduce: Callable[[torch.Tensor], torch.Tensor] | None = None) -> Window:
        """Move the recorded steps to the host in one transfer and reset.

        ``reduce`` sums the figures over the ranks of a data-parallel run (one all-reduce of one
        vector per read); then the window is the global batch's, on every rank, and a loss that is
        not finite on any rank is not finite in the sum, so every rank stops at the same step.
        """
        if not self._counts:
            return Window()
        counts = torch.tensor(self._counts, dtype=torch.float64, device=self._losses[0].device)
        try:  # every step's loss has one shape (0-dim, or (1,) from some losses): one stack
            losses = torch.stack(self._losses).reshape(-1)
        except RuntimeError:
            losses = torch.stack([loss.reshape(()) for loss in self._losses])
        weighted = losses.double() * counts  # loss sums
        self._fold()
        hits = self._hits
        n = len(weighted)
        parts_keys = list(self._parts)
        part_sums = [torch.stack([v.reshape(()).double() for v in self._parts[key]]).to(counts.device)
                     * torch.tensor(self._part_counts[key], dtype=torch.float64, device=counts.device)
                     for key in parts_keys]
        flat = torch.cat([weighted, counts, hits.double().reshape(-1), *part_sums])
        if reduce is not None:
            flat = reduce(flat)
        # one device->host copy of everything: loss sums and counts per step, hit counts, part sums
        flat = flat.tolist()
        step_sums, step_counts, hit_counts = flat[:n], flat[n:2 * n], flat[2 * n:2 * n + hits.numel()]
        seen = int(sum(step_counts))
        window = Window(seen=seen, loss_sum=sum(step_sums), miss1=seen - int(hit_counts[0]),
                        miss5=seen - int(sum(hit_counts)))
        offset = 2 * n + hits.numel()
        for key in parts_keys:
            values = flat[offset:offset + len(self._parts[key])]
            offset += len(values)
            window.parts[key] = sum(values)
        for index, (value, count) in enumerate(zip(step_sums, step_counts)):
            if not math.isfinite(value):
                window.bad_step, window.bad_loss = index, value / count
                break
        self.__init__()
        return window
