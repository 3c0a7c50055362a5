"""``s``: pick the runs table's sort column from a list (Enter sorts, the same column again reverses)."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import ModalScreen
from textual.widgets import OptionList
from textual.widgets.option_list import Option

from .format import COLUMNS


class SortScreen(ModalScreen[str | None]):
    """Dismisses with the chosen column key, or None (Escape)."""

    DEFAULT_CSS = """
    SortScreen { align: center middle; }
    SortScreen > OptionList { width: 32; height: auto; max-height: 90%; border: thick $accent; }
    """

    BINDINGS = [Binding("escape,q", "cancel", "Cancel")]

    def __init__(self, current: str, reverse: bool) -> None:
        super().__init__()
        self.current = current
        self.reverse = reverse

    def compose(self) -> ComposeResult:
        arrow = "▼" if self.reverse else "▲"
        options = [Option(f"{label}{'  ' + arrow if key == self.current else ''}", id=key)
                   for key, label in COLUMNS if key != "mark"]
        menu = OptionList(*options)
        menu.border_title = "sort by"
        yield menu

    def on_mount(self) -> None:
        menu = self.query_one(OptionList)
        menu.highlighted = menu.get_option_index(self.current) if self.current != "mark" else 0
        menu.focus()

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        self.dismiss(event.option.id)

    def action_cancel(self) -> None:
        self.dismiss(None)
