"""``C``: the sweep dialog -- preset, methods (multi-select from the registry), budgets, seeds,
``--grid`` keys, overrides and placement, with a dry-run preview of the plan (solved hp,
params, unreachable entries with their range) that must be seen before anything starts.

Preview and launch run ``lowrank compare run`` in a child process (:mod:`.sweep_actions`);
after the launch the app follows the sweep live in the compare view.
"""

from __future__ import annotations

from pathlib import Path

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Checkbox, Input, Label, OptionList, Select, SelectionList, Static
from textual.widgets.option_list import Option

from lowrank.errors import UserError

from . import sweep_actions
from .launch_screen import _display
from .sweep_actions import SweepAnswer, SweepRequest


def sweep_placements(snapshot) -> list[tuple[str, str]]:
    """(label, placement) choices of a sweep: the queue (GPU or CPU), the CPU, N GPUs per run, Slurm."""
    options = [("queue: the scheduler places each run (a free GPU, or a CPU slot)", "queue"),
               ("queue on the CPU (CPU slots: lowrank scheduler start --cpu-slots N)", "queue-cpu")]
    if getattr(snapshot, "gpus", None):
        options.append(("queue, 1 GPU per run", "gpus:1"))
    options.append(("Slurm: the sweep as one job array", "slurm"))
    return options


class SweepScreen(ModalScreen[SweepRequest | None]):
    """Fill in the sweep, Preview the plan (or Enter in a field), then Launch; Escape cancels."""

    DEFAULT_CSS = """
    SweepScreen { align: center middle; }
    SweepScreen > VerticalScroll {
        width: 110; max-width: 100%; height: auto; max-height: 100%; padding: 0 1;
        border: thick $accent; background: $surface;
    }
    SweepScreen OptionList { height: auto; max-height: 6; }
    SweepScreen SelectionList { height: auto; max-height: 7; }
    SweepScreen Horizontal { height: auto; }
    SweepScreen Horizontal > Input { width: 1fr; }
    SweepScreen #seeds { width: 14; }
    SweepScreen Horizontal > Select { width: 1fr; }
    SweepScreen Checkbox { width: auto; }
    SweepScreen #plan { height: auto; margin: 1 0; color: $text-muted; }
    SweepScreen #buttons { align-horizontal: right; }
    SweepScreen Button { margin-left: 2; }
    """

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, home: Path, presets: list[Path], roots: list[Path], methods: list[tuple[str, str]],
                 placements: list[tuple[str, str]]) -> None:
        super().__init__()
        self.home, self.presets, self.roots = home, presets, roots
        self.methods, self.placements = methods, placements
        self.previewed: SweepRequest | None = None  # the request whose plan is shown and runnable
        self.answer: SweepAnswer | None = None
        self.plan_width = sweep_actions.PLAN_WIDTH

    def compose(self) -> ComposeResult:
        with VerticalScroll():
            yield Label("[b]Sweep from a preset[/b]: methods x budgets x seeds x grid, budget-matched")
            yield OptionList(*(Option(_display(path, self.roots), id=str(i)) for i, path in enumerate(self.presets)),
                             id="presets")
            yield Label("methods (space toggles)")
            yield SelectionList[str](*((f"{name}  {about}", name) for name, about in self.methods), id="methods")
            with Horizontal():
                yield Input(placeholder="budgets, e.g. 0.05,0.1", id="budgets")
                yield Input(value="1", placeholder="seeds", id="seeds", type="integer")
            with Horizontal():
                yield Input(placeholder="grid: KEY=V1,V2 ... (train.weight_decay=1e-4,5e-4)", id="grid")
                yield Input(placeholder="overrides: train.epochs=5 ...", id="overrides")
            with Horizontal():
                yield Select(self.placements, value=self.placements[0][1], allow_blank=False, id="placement")
                yield Checkbox("skip unreachable", id="skip")
            yield Static("Preview shows the plan (solved hp, params, unreachable entries); nothing starts before "
                         "it.", id="plan", markup=False)
            with Horizontal(id="buttons"):
                yield Button("Preview", id="preview")
                yield Button("Launch", variant="primary", id="launch")
                yield Button("Cancel", id="cancel")

    def on_mount(self) -> None:
        options = self.query_one(OptionList)
        if self.presets:
            options.highlighted = 0
        options.focus()

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        self.query_one(SelectionList).focus()

    def request(self) -> SweepRequest:
        """The dialog's fields as a request (UserError when one cannot be read)."""
        index = self.query_one(OptionList).highlighted
        if index is None or not self.presets:
            raise UserError("choose a preset first", key="preset")
        seeds = self.query_one("#seeds", Input).value.strip() or "1"
        return SweepRequest(self.presets[index], tuple(self.query_one(SelectionList).selected),
                            self.query_one("#budgets", Input).value, int(seeds),
                            tuple(self.query_one("#grid", Input).value.split()),
                            self.query_one("#overrides", Input).value, str(self.query_one("#placement", Select).value),
                            self.query_one("#skip", Checkbox).value)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.action_preview()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        if event.button.id == "preview":
            self.action_preview()
        elif event.button.id == "launch":
            self.action_launch()
        else:
            self.dismiss(None)

    def action_cancel(self) -> None:
        self.dismiss(None)

    def action_preview(self) -> None:
        try:
            request = self.request()
            request.arguments()  # a bad override or grid entry: said now, no child started
        except (UserError, ValueError) as error:
            self._show(SweepAnswer(False, error.render() if isinstance(error, UserError) else str(error)))
            return
        self.query_one("#plan", Static).update(f"planning {request.preset.name} (solving each budget)...")
        self.plan_width = max(60, (self.query_one("#plan", Static).content_size.width or sweep_actions.PLAN_WIDTH) - 3)
        self.plan_in_thread(request)

    @work(thread=True, exclusive=True, group="sweep-plan")
    def plan_in_thread(self, request: SweepRequest) -> None:
        try:
            answer = sweep_actions.preview(self.home, request, columns=self.plan_width)
        except UserError as error:
            answer = SweepAnswer(False, error.render())
        self.app.call_from_thread(self._planned, request, answer)

    def _planned(self, request: SweepRequest, answer: SweepAnswer) -> None:
        self.previewed = request if answer.ok else None
        self._show(answer)

    def _show(self, answer: SweepAnswer) -> None:
        self.answer = answer
        from console.safe_text import clean_block

        plan = self.query_one("#plan", Static)
        plan.update(("" if answer.ok else "cannot plan: ") + clean_block(answer.text))
        self.call_after_refresh(plan.scroll_visible, top=True)  # a short terminal: the plan, not the form

    def action_launch(self) -> None:
        """Launch the previewed plan; with changed fields (or none previewed) preview first."""
        try:
            request = self.request()
        except (UserError, ValueError):
            self.action_preview()
            return
        if request != self.previewed:
            self.notify("review the plan first: Launch again to start it", timeout=4)
            self.action_preview()
            return
        self.dismiss(request)
