"""``l``: the whole output.log of a run, following new lines as the worker writes them."""

from __future__ import annotations

import time
from pathlib import Path

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Footer, Label, Log
from textual.worker import get_current_worker

from console.safe_text import visible

FIRST_READ = 2 * 1024 * 1024  # a huge log opens at its last 2 MiB
POLL_SECONDS = 0.5


class LogScreen(Screen[None]):
    """A :class:`Log` fed by a thread worker that reads only new bytes (by offset)."""

    DEFAULT_CSS = """
    LogScreen Label { dock: top; width: 1fr; background: $primary-darken-2; padding: 0 1; }
    LogScreen Log { height: 1fr; }
    """

    BINDINGS = [Binding("escape,l,q", "close", "Back")]

    class NewLines(Message):
        """Lines appended to the log since the last read."""

        def __init__(self, lines: list[str]) -> None:
            super().__init__()
            self.lines = lines

    def __init__(self, path: Path, run_id: str) -> None:
        super().__init__()
        self.path = Path(path)
        self.run_id = run_id

    def compose(self) -> ComposeResult:
        yield Label(f"log of {self.run_id}  ({visible(self.path)})", markup=False)
        yield Log(max_lines=50_000, highlight=False)
        yield Footer()

    def on_mount(self) -> None:
        self.query_one(Log).focus()
        self.follow()

    @work(thread=True, exclusive=True, group="log")
    def follow(self) -> None:
        """Read the log from its last 2 MiB, then every half second whatever was appended."""
        worker = get_current_worker()
        offset, partial, first = None, b"", True
        while not worker.is_cancelled:
            try:
                with open(self.path, "rb") as handle:
                    size = handle.seek(0, 2)
                    if offset is None or size < offset:
                        offset = max(0, size - FIRST_READ)
                    handle.seek(offset)
                    data = handle.read()
            except FileNotFoundError:
                data = b""
                if first:
                    self.post_message(self.NewLines([f"(no log yet at {self.path})"]))
            first = False
            if data:
                offset += len(data)
                text = (partial + data).decode("utf-8", errors="replace").replace("\r", "\n")
                *lines, rest = text.split("\n")
                partial = rest.encode("utf-8")
                if lines:
                    self.post_message(self.NewLines([visible(line) for line in lines]))  # escapes shown, not obeyed
            time.sleep(POLL_SECONDS)

    def on_log_screen_new_lines(self, message: NewLines) -> None:
        self.query_one(Log).write_lines(message.lines)

    def action_close(self) -> None:
        self.dismiss(None)
