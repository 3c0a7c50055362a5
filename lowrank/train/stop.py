"""Stopping the worker cleanly: SIGTERM/SIGINT set a flag that the loop checks once per step
(and between setup stages); at a step it writes a mid-epoch checkpoint first (lowrank.train.position).

No torch here, so the console (and tests) can import the stop types cheaply.
"""

from __future__ import annotations

import signal
from typing import Any


class StopRequested(Exception):
    """Raised inside the loop when SIGTERM/SIGINT arrived; carries the signal number."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class StopFlag:
    """Signal handler target: remembers the first stop signal, checked once per step."""

    def __init__(self) -> None:
        self.signum: int | None = None

    def __call__(self, signum: int, frame: Any) -> None:
        if self.signum is None:
            self.signum = signum

    def requested(self) -> bool:
        """Whether a stop signal has arrived (the training loop then checkpoints before stopping)."""
        return self.signum is not None

    def check(self) -> None:
        """Raise :class:`StopRequested` if a stop signal has arrived since the flag was made."""
        if self.requested():
            raise StopRequested(self.signum if self.signum is not None else signal.SIGTERM)


_StopFlag = StopFlag  # the name the worker's tests have always imported
