"""The lowrank console: GPUs and host load, every run, live curves; launch, kill and relaunch.

Reading happens in two thread workers (runs + metrics + logs; GPU/host snapshot) that
post merged messages (:mod:`.messages`); the UI thread only renders. Actions that block
(validating a preset imports torch, killing waits for the worker) run in thread workers
too and report through notifications. Quitting leaves runs going: each worker process
lives in its own session.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, Callable

from textual import work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Footer, Header
from textual.worker import get_current_worker

from console.backends import register_reconcilers
from console.safe_text import clean, clean_block
from lowrank.rundir import STATES, lowrank_home

from .detail import RunDetail
from .filter_bar import FilterBar
from .gpu_panel import GpuPanel
from .log_screen import LogScreen
from .messages import ActionDone, DetailChanged, HostChanged, RunsChanged
from .monitor import detail_for
from .run_actions import RunActions
from .runs_table import RunsTable
from .watch import HostReader, MetricsCache, RunRecord, RunWatcher, gpu_runs, log_path

register_reconcilers()  # the runs table shows a Slurm run's state as Slurm sees it
DEBOUNCE_SECONDS = 0.12
MAIN_ONLY = {"studies", "launch", "sweep", "kill", "relaunch", "log", "compare", "filter", "cycle_state", "toggle_mark", "next_tab", "mark_all", "clear_marks", "pick_sort", "reverse_sort"}


def console_commands() -> type:
    """The palette provider, imported when the palette first opens (textual.command is slow to import)."""
    from .commands import ConsoleCommands

    return ConsoleCommands


class LowrankConsole(RunActions, App[None]):
    """The console. ``snapshot_fn`` and ``clock`` are injectable so tests are deterministic."""

    CSS_PATH = "app.tcss"
    TITLE = "lowrank console"
    COMMANDS = App.COMMANDS | {console_commands}
    # the screen gets a class per size band (app.tcss reflows the panels by them)
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (110, "-medium"), (160, "-wide")]
    VERTICAL_BREAKPOINTS = [(0, "-short"), (32, "-tall")]
    BINDINGS = [
        Binding("question_mark", "help", "Help"),  # first: the footer of an 80-column terminal shows it
        Binding("n", "launch", "Launch"), Binding("C", "sweep", "Sweep"), Binding("x", "kill", "Kill"), Binding("K", "kill", "Kill", show=False),
        Binding("r", "relaunch", "Relaunch"),
        Binding("l", "log", "Log"), Binding("c", "compare", "Compare"), Binding("T", "studies", "Studies", show=False), Binding("slash", "filter", "Filter"),
        Binding("f", "cycle_state", "State filter", show=False), Binding("t", "next_tab", "Tab", show=False),
        Binding("q", "quit", "Quit"),
    ]

    def __init__(self, home: Path | str | None = None, *, snapshot_fn: Callable[[], Any] | None = None,
                 clock: Callable[[], float] = time.time, poll_interval: float = 1.0, host_interval: float = 1.0,
                 presets_dirs: list[Path] | None = None) -> None:
        super().__init__()
        self.home = Path(home).expanduser().resolve() if home else lowrank_home()
        self.snapshot_fn = snapshot_fn or HostReader()
        self.clock = clock
        self.poll_interval = poll_interval
        self.host_interval = host_interval
        self.presets_dirs = presets_dirs
        self.records: dict[str, RunRecord] = {}
        self.snapshot: Any = None
        self.focus_run: str | None = None  # read by the runs worker
        self.marked: tuple[str, ...] = ()
        self.first_paint: float | None = None  # perf_counter() of the first frame (benchmarks)
        self._wake = threading.Event()
        self._stop = threading.Event()

    def compose(self) -> ComposeResult:
        # kept as attributes: modal screens on top must not hide them from the message handlers
        self.gpu_panel, self.runs_table = GpuPanel(id="gpus"), RunsTable(id="runs")
        self.run_detail, self.filter_bar = RunDetail(id="detail"), FilterBar(id="filter")
        yield Header()
        yield self.gpu_panel
        yield self.runs_table
        yield self.run_detail
        yield self.filter_bar
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = str(self.home)
        self.runs_table.focus()
        self.call_after_refresh(self._painted)
        self.watch_runs()
        self.watch_host()

    def _painted(self) -> None:
        if self.first_paint is None:
            self.first_paint = time.perf_counter()

    def on_unmount(self) -> None:
        self._stop.set()
        self._wake.set()

    # -- readers (thread workers) -------------------------------------------------------
    @work(thread=True, exclusive=True, group="runs")
    def watch_runs(self) -> None:
        """Every ``poll_interval``: re-read changed runs, tail the shown runs' metrics and log."""
        worker = get_current_worker()
        watcher, metrics = RunWatcher(self.home, clock=self.clock), MetricsCache(self.home)
        last_rows: dict[str, tuple[str, ...]] | None = None
        last_key: tuple | None = None
        last_focus: tuple | None = None
        cache: dict = {}
        while not worker.is_cancelled and not self._stop.is_set():
            self._wake.clear()
            records = watcher.scan()
            rows = {rid: record.cells for rid, record in records.items()}
            if rows != last_rows:
                last_rows = rows
                self.post_message(RunsChanged(records))
            focus = (self.focus_run, self.marked)
            if focus != last_focus and last_focus is not None:
                # the selection just moved: wait for the keys to settle (holding an arrow key
                # must not redraw the curves of every run it passes)
                while self._stop.wait(DEBOUNCE_SECONDS) is False and (self.focus_run, self.marked) != focus:
                    focus = (self.focus_run, self.marked)
            last_focus = focus
            detail = detail_for(records, focus[0], focus[1], metrics, self.home, cache)
            if detail.key != last_key:
                last_key = detail.key
                self.post_message(DetailChanged(detail))
            self._wake.wait(self.poll_interval)

    @work(thread=True, exclusive=True, group="host")
    def watch_host(self) -> None:
        """Every ``host_interval``: a GPU/host snapshot (NVML never on the UI thread)."""
        worker = get_current_worker()
        while not worker.is_cancelled and not self._stop.is_set():
            snap = self.snapshot_fn()
            self.post_message(HostChanged(snap, gpu_runs(snap, self.records)))
            self._revive_queue()
            self._stop.wait(self.host_interval)

    def _revive_queue(self) -> None:
        """Queued runs and no scheduler (it was killed): start one and say so (host thread)."""
        if not any(record.info.state == "queued" for record in list(self.records.values())):
            return
        from console.runs import RunStore
        from console.scheduler import revive

        try:
            message = revive(RunStore(self.home))
        except Exception as error:  # never take the console down over this
            message = f"queued runs have no scheduler and starting one failed: {error}"
        if message:
            self.call_from_thread(self.notify, clean(message), timeout=10)

    def refresh_now(self) -> None:
        """Poll again at once (after an action or a change of selection)."""
        self._wake.set()

    # -- messages -----------------------------------------------------------------------
    def on_runs_changed(self, message: RunsChanged) -> None:
        if not self.runs_table.is_attached:
            return  # shutting down
        self.records = message.records
        self.runs_table.set_records(message.records)
        self._follow_cursor()

    def on_host_changed(self, message: HostChanged) -> None:
        self.snapshot = message.snapshot
        if not self.gpu_panel.is_attached:
            return
        self.gpu_panel.show(message.snapshot, message.gpu_runs)

    def on_detail_changed(self, message: DetailChanged) -> None:
        if not self.run_detail.is_attached:
            return
        self.run_detail.show(message.detail)

    def on_action_done(self, message: ActionDone) -> None:
        # error texts come from files and users: no escapes, and never parsed as markup ([/bold] would raise)
        self.notify(clean_block(message.text), severity=message.severity, title=clean(message.title),  # type: ignore[arg-type]
                    timeout=8, markup=False)
        self.refresh_now()

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if isinstance(event.data_table, RunsTable):
            self._follow_cursor()

    def on_runs_table_marks_changed(self, message: RunsTable.MarksChanged) -> None:
        self.marked = tuple(sorted(message.marked))
        self.refresh_now()

    def on_filter_bar_query_changed(self, message: FilterBar.QueryChanged) -> None:
        table = self.runs_table
        table.set_query(message.query)
        if message.done:
            table.focus()
        self._follow_cursor()

    def _follow_cursor(self) -> None:
        highlighted = self.runs_table.highlighted
        if highlighted != self.focus_run:
            self.focus_run = highlighted
            self.refresh_now()

    # -- actions ------------------------------------------------------------------------
    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Run actions belong to the main screen, not to the log/compare/help screens above it."""
        if action in MAIN_ONLY and len(self.screen_stack) > 1:
            return False
        return True

    def action_filter(self) -> None:
        self.filter_bar.open()

    def action_cycle_state(self) -> None:
        """Cycle the filter's state: all -> running -> queued -> finished -> failed -> killed -> pruned -> all."""
        bar = self.filter_bar
        words = bar.value.split()
        current = next((w.removeprefix("state:") for w in words if w.removeprefix("state:") in STATES), None)
        cycle = [None, "running", "queued", "finished", "failed", "killed", "pruned"]
        following = cycle[(cycle.index(current) + 1) % len(cycle)]
        words = [w for w in words if w.removeprefix("state:") not in STATES] + ([following] if following else [])
        bar.value = " ".join(words)
        self.runs_table.set_query(bar.value)
        self._follow_cursor()
        self.notify(f"state filter: {following or 'all'}", timeout=2)

    def action_toggle_mark(self) -> None:
        self.runs_table.action_toggle_mark()

    def action_pick_sort(self) -> None:
        self.runs_table.action_pick_sort()

    def action_reverse_sort(self) -> None:
        self.runs_table.action_reverse_sort()

    def action_mark_all(self) -> None:
        self.runs_table.action_mark_all()

    def action_clear_marks(self) -> None:
        self.runs_table.action_clear_marks()

    def action_next_tab(self) -> None:
        self.run_detail.next_tab()

    def action_help(self) -> None:
        from .help_screen import HelpScreen

        self.push_screen(HelpScreen())

    def action_log(self) -> None:
        run_id = self.runs_table.highlighted
        if run_id is None:
            self.notify("no run selected", severity="warning")
            return
        self.push_screen(LogScreen(log_path(self.home, run_id), run_id))

    def action_compare(self) -> None:
        """The selected runs when there is a selection, else the highlighted run's family."""
        from .compare_screen import CompareScreen, family, selection

        marked = [rid for rid in self.runs_table.marked if rid in self.records]
        run_id = self.runs_table.highlighted
        if marked:
            label, runs = selection(self.records, marked)
        elif run_id is None or run_id not in self.records:
            self.notify("no run selected: highlight a run of the family to compare", severity="warning")
            return
        else:
            label, runs = family(self.records, run_id)
        if not runs:
            self.notify(f"no finished runs in {label} yet", severity="warning")
            return
        self.push_screen(CompareScreen(label, runs))

    def action_studies(self) -> None:
        """Hyperparameter studies and their trials (read from manifests and run statuses)."""
        from .studies_screen import StudiesScreen

        self.push_screen(StudiesScreen(self.home))


def run_app(home: Path | str | None = None) -> None:
    """Run the console until the user quits."""
    LowrankConsole(home).run()
