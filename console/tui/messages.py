"""Messages the console's thread workers post to the app.

Each overrides :meth:`can_replace`: a newer reading replaces a queued older one, so a
busy UI thread handles only the latest state instead of a backlog (toolong's trick).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from textual.message import Message

from .watch import RunRecord, Series


class RunsChanged(Message):
    """The runs under LOWRANK_HOME, re-read (only sent when something differs)."""

    def __init__(self, records: dict[str, RunRecord]) -> None:
        super().__init__()
        self.records = records

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, RunsChanged)


class HostChanged(Message):
    """A new GPU/host snapshot, with our runs on each GPU."""

    def __init__(self, snapshot: Any, gpu_runs: dict[int, list[str]]) -> None:
        super().__init__()
        self.snapshot = snapshot
        self.gpu_runs = gpu_runs

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, HostChanged)


@dataclass
class Detail:
    """What the detail pane shows: the highlighted run and the curves to overlay."""

    run_id: str | None
    record: RunRecord | None
    curves: list[tuple[str, dict[str, Series]]]  # (label, {"loss": series, "err1": series})
    log_lines: list[str]
    key: tuple  # changes whenever anything shown changes


class DetailChanged(Message):
    """New data for the detail pane (curves, log tail, status)."""

    def __init__(self, detail: Detail) -> None:
        super().__init__()
        self.detail = detail

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, DetailChanged)


class ActionDone(Message):
    """A launch/kill/relaunch worker finished: say so in a notification."""

    def __init__(self, text: str, severity: str = "information", title: str = "") -> None:
        super().__init__()
        self.text = text
        self.severity = severity
        self.title = title
