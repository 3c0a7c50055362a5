"""Shared by the worker tests: an injected stop at a chosen step, and the figures two runs
that trained identically must agree on."""

from __future__ import annotations

import signal

from lowrank.rundir import RunDir
from lowrank.train import StopRequested, _StopFlag


class StopAfter(_StopFlag):
    """A stop flag that fires after ``steps`` checks (setup stages, training steps, evaluation
    batches), as if SIGTERM arrived then."""

    def __init__(self, steps: int) -> None:
        super().__init__()
        self.remaining = steps

    def requested(self) -> bool:  # asked once per training step (and by check())
        self.remaining -= 1
        return self.remaining < 0

    def check(self) -> None:  # setup stages and evaluation batches
        if self.requested():
            raise StopRequested(signal.SIGTERM)


def final_events(run: RunDir) -> dict:
    """The test metrics and the last validation figures: equal for runs that trained identically."""
    records = run.read_metrics()
    test = [r for r in records if r.get("event") == "test"][-1]
    evals = [r for r in records if r.get("event") == "eval"]
    return {"test": {k: test[k] for k in ("loss", "err1", "err5")},
            "val": [(r["epoch"], r["loss"], r["err1"]) for r in evals][-1]}
