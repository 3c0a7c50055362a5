"""``?``: the keys of the console (drawn from :mod:`.keys`; a Rich table, so it opens at once)."""

from __future__ import annotations

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from .keys import KEYS, NOTES


def help_renderable() -> Group:
    """The key table and the notes below it."""
    table = Table(box=None, show_header=True, header_style="bold", expand=True, pad_edge=False)
    table.add_column("key", style="bold cyan", no_wrap=True)
    table.add_column("action", ratio=1)
    for key, _, text in KEYS:
        table.add_row(Text(key), Text(text))
    return Group(Text("lowrank console\n", style="bold"), table, Text(""),
                 *(Text(note, style="dim") for note in NOTES))


class HelpScreen(ModalScreen[None]):
    """The key table; Escape, ``?`` or ``q`` closes it."""

    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > VerticalScroll {
        width: 100; max-width: 100%; height: auto; max-height: 100%; border: thick $accent;
        background: $surface; padding: 0 1;
    }
    HelpScreen Static { height: auto; }
    """

    BINDINGS = [Binding("escape,question_mark,q", "dismiss", "Close")]

    def compose(self) -> ComposeResult:
        with VerticalScroll():
            yield Static(help_renderable(), id="help-text")

    async def action_dismiss(self, result: None = None) -> None:
        self.dismiss(None)
