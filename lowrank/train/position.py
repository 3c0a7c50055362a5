"""Where inside an epoch a stopped run was, so ``--resume`` continues from that very step.

A SIGTERM/SIGINT (``lowrank kill``, Slurm's signal before a time limit) is honoured at the
next step boundary: the loop writes a checkpoint that, besides the usual state, records the
batches already trained in the current epoch, the epoch's running totals and the RNG state
at the start of that epoch. Resuming replays the epoch's data loading for those batches
(same loader seed, same start-of-epoch RNG, so the sampler, the data workers and the
augmentation draw exactly what they drew before) without training on them, then restores
the RNG state of the stop and trains on. Replaying the loader instead of re-implementing
its order keeps this exact for any sampler (shuffled, distributed, device-resident) and any
number of loader workers; the cost is reading those batches once more.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from .checkpoint import set_rng_state
from .tally import Window


def window_to_dict(window: Window) -> dict[str, Any]:
    """The epoch's running totals as plain numbers (weights-only loadable)."""
    data = asdict(window)
    data.pop("bad_step"), data.pop("bad_loss")
    return data


def window_from_dict(data: dict[str, Any] | None) -> Window:
    data = dict(data or {})
    return Window(seen=int(data.get("seen", 0)), loss_sum=float(data.get("loss_sum", 0.0)),
                  miss1=int(data.get("miss1", 0)), miss5=int(data.get("miss5", 0)),
                  parts={str(k): float(v) for k, v in dict(data.get("parts") or {}).items()})


@dataclass
class MidEpoch:
    """A checkpoint's position inside epoch ``epoch`` (0-based): ``batches`` already trained."""

    epoch: int
    batches: int
    totals: dict[str, Any]
    epoch_rng: dict[str, Any]  # the RNG state right after the epoch's loader was seeded
    stop_rng: dict[str, Any]  # the RNG state at the stop
    epoch_logged: bool = False  # the epoch's train line is already in metrics.jsonl (stopped in its eval)
    seconds: float = 0.0  # training time spent in this epoch before the stop

    def to_checkpoint(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "batches": self.batches, "totals": self.totals, "epoch_rng": self.epoch_rng,
                "epoch_logged": self.epoch_logged, "seconds": self.seconds}

    @classmethod
    def from_checkpoint(cls, state: dict[str, Any]) -> "MidEpoch | None":
        """The position in a checkpoint, or None for one written at an epoch boundary."""
        mid = state.get("mid_epoch")
        if not mid:
            return None
        return cls(epoch=int(mid["epoch"]), batches=int(mid["batches"]), totals=dict(mid.get("totals") or {}),
                   epoch_rng=mid["epoch_rng"], stop_rng=state["rng"], epoch_logged=bool(mid.get("epoch_logged")),
                   seconds=float(mid.get("seconds", 0.0)))


class Replay:
    """Drives the resumed epoch: which batches to skip, and the RNG switch at the stop point."""

    def __init__(self, mid: MidEpoch) -> None:
        self.mid = mid
        self.restored = False

    def begin_epoch(self) -> None:
        """Call right after seeding the epoch's loader: the RNG as it was at that moment."""
        set_rng_state(self.mid.epoch_rng)
        if self.mid.batches == 0:
            self.finish()

    def skip(self, batch: int) -> bool:
        """True for a batch trained before the stop (loaded again, not trained on).

        The stop's RNG state comes back in the body of the last skipped batch, i.e. before
        the loader fetches the first batch to train: the stop happened after a step and
        before that fetch, so the fetch (random crops drawn in this process when the loader
        has no workers) sees exactly the state it saw in the uninterrupted run.
        """
        if batch < self.mid.batches:
            if batch == self.mid.batches - 1:
                self.finish()
            return True
        self.finish()
        return False

    def finish(self) -> None:
        """Restore the stop's RNG state (once), also when the epoch had no batch left to train."""
        if not self.restored:
            set_rng_state(self.mid.stop_rng)
            self.restored = True
