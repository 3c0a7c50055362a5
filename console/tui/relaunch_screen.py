"""``r``: relaunch a run -- a new run from the same resolved config, or the same run resumed
from its checkpoint -- queued or started now."""

from __future__ import annotations

from dataclasses import dataclass

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Label, Select


@dataclass
class RelaunchRequest:
    run_ids: list[str]
    resume: bool
    placement: str


class RelaunchScreen(ModalScreen[RelaunchRequest | None]):
    """Buttons: new run (``n``), resume (``r``), cancel (Escape); a placement select."""

    DEFAULT_CSS = """
    RelaunchScreen { align: center middle; }
    RelaunchScreen > Vertical {
        width: 90; height: auto; padding: 1 2; border: thick $accent; background: $surface;
    }
    RelaunchScreen Select { margin: 1 0; }
    RelaunchScreen Horizontal { height: auto; align-horizontal: right; }
    RelaunchScreen Button { margin-left: 2; }
    """

    BINDINGS = [Binding("escape", "cancel", "Cancel"), Binding("n", "choose(False)", "New run"),
                Binding("r", "choose(True)", "Resume")]

    def __init__(self, run_ids: list[str], placements: list[tuple[str, str]]) -> None:
        super().__init__()
        self.run_ids = run_ids
        self.placements = placements

    def compose(self) -> ComposeResult:
        names = ", ".join(self.run_ids[:4]) + (f" (+{len(self.run_ids) - 4})" if len(self.run_ids) > 4 else "")
        with Vertical():
            yield Label(f"[b]Relaunch[/b] {names}", markup=True)
            yield Label("new run: a fresh copy of the resolved config; resume: continue from checkpoint.pt")
            yield Select(self.placements, value=self.placements[0][1], allow_blank=False, id="placement")
            with Horizontal():
                yield Button("New run (n)", variant="primary", id="new")
                yield Button("Resume (r)", variant="warning", id="resume")
                yield Button("Cancel", id="cancel")

    def on_mount(self) -> None:
        self.query_one("#new", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        if event.button.id == "cancel":
            self.dismiss(None)
        else:
            self.action_choose(event.button.id == "resume")

    def action_choose(self, resume: bool) -> None:
        self.dismiss(RelaunchRequest(self.run_ids, resume, str(self.query_one(Select).value)))

    def action_cancel(self) -> None:
        self.dismiss(None)
