"""``n``: launch a run from a preset -- pick the file, add ``--set`` overrides, choose GPU or queue."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, OptionList, Select
from textual.widgets.option_list import Option


@dataclass
class LaunchRequest:
    """What the user asked for; validated and carried out by the app in a worker thread."""

    preset: Path
    overrides: str
    placement: str


def _display(path: Path, roots: list[Path]) -> str:
    for root in roots:
        try:
            return str(path.relative_to(root.resolve()))
        except ValueError:
            continue
    return str(path)


class LaunchScreen(ModalScreen[LaunchRequest | None]):
    """Choose a preset, overrides and a placement; Enter in the overrides field launches."""

    DEFAULT_CSS = """
    LaunchScreen { align: center middle; }
    LaunchScreen > Vertical {
        width: 90; height: auto; max-height: 90%; padding: 1 2;
        border: thick $accent; background: $surface;
    }
    LaunchScreen OptionList { height: auto; max-height: 14; margin-bottom: 1; }
    LaunchScreen Select { margin-bottom: 1; }
    LaunchScreen Horizontal { height: auto; align-horizontal: right; }
    LaunchScreen Button { margin-left: 2; }
    """

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, presets: list[Path], roots: list[Path], placements: list[tuple[str, str]]) -> None:
        super().__init__()
        self.presets = presets
        self.roots = roots
        self.placements = placements

    def compose(self) -> ComposeResult:
        where = ", ".join(str(root) for root in self.roots) or "no presets folder"
        with Vertical():
            yield Label(f"[b]Launch from a preset[/b]  ({where})")
            yield OptionList(*(Option(_display(path, self.roots), id=str(i)) for i, path in enumerate(self.presets)),
                             id="presets")
            yield Label("overrides (--set), e.g. train.epochs=5 data.batch_size=32; name=NAME names the run")
            yield Input(placeholder="KEY.PATH=VALUE ...", id="overrides")
            yield Label("where")
            yield Select(self.placements, value=self.placements[0][1], allow_blank=False, id="placement")
            with Horizontal():
                yield Button("Launch", variant="primary", id="launch")
                yield Button("Cancel", id="cancel")

    def on_mount(self) -> None:
        options = self.query_one(OptionList)
        if self.presets:
            options.highlighted = 0
        options.focus()

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        self.query_one("#overrides", Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self._launch()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        if event.button.id == "launch":
            self._launch()
        else:
            self.dismiss(None)

    def action_cancel(self) -> None:
        self.dismiss(None)

    def _launch(self) -> None:
        index = self.query_one(OptionList).highlighted
        if index is None or not self.presets:
            self.notify("choose a preset first", severity="warning")
            return
        self.dismiss(LaunchRequest(self.presets[index], self.query_one("#overrides", Input).value,
                                   str(self.query_one("#placement", Select).value)))
