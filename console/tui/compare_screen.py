"""``c``: runs side by side -- the selected runs, or the highlighted run's family (same sweep, or
same model and dataset) -- as a table (method, hp/budget, params, mult-adds, errors) and
an error-vs-cost scatter with the Pareto front (``m`` switches parameters / mult-adds, ``L``
measured latency at batch 1 / throughput, whose front keeps the highest throughput).

A measured axis plots only runs with a latency, and only those of one device key (the
highlighted row's, else the key most runs share): latencies of different devices or thread
counts are never drawn together, and the title says which key is shown and what was left out.

Finished runs are filled markers; running runs are drawn hollow at their current best
validation error. With ``live`` the screen re-reads the app's records every poll, so a
sweep's points appear as its runs finish.
"""

from __future__ import annotations

import math
from typing import Callable

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Label
from textual_plotext import PlotextPlot

from console.compare import X_AXES, Axis
from console.safe_text import clean
from lowrank.deploy.records import device_key, device_keys

from .format import count, number, pct
from .scatter import headroom, linear_ticks, log_axis, marker, pareto_front, tick_label
from .watch import RunRecord

SHOWN_STATES = ("finished", "running")
COST_AXES = ("params", "macs")  # m switches between these
MEASURED_AXES = ("latency", "throughput")  # L switches between these


def family(records: dict[str, RunRecord], run_id: str) -> tuple[str, list[RunRecord]]:
    """(label, finished and running runs) of ``run_id``'s family: its sweep if it has one, else model + dataset."""
    base = records[run_id]
    sweep = base.status.get("sweep")
    if sweep:
        members = [r for r in records.values() if r.status.get("sweep") == sweep]
        label = f"sweep {sweep}"
    else:
        key = (base.info.model, base.info.dataset)
        members = [r for r in records.values() if (r.info.model, r.info.dataset) == key]
        label = f"{base.info.model or '?'} on {base.info.dataset or '?'}"
    return label, _ordered(members)


def sweep_members(records: dict[str, RunRecord], sweep_id: str) -> tuple[str, list[RunRecord]]:
    """(label, finished and running runs) of the sweep ``sweep_id``; the label counts the runs still waiting."""
    members = [r for r in records.values() if r.status.get("sweep") == sweep_id]
    waiting = sum(r.info.state == "queued" for r in members)
    return f"sweep {sweep_id}" + (f" ({waiting} queued)" if waiting else ""), _ordered(members)


def selection(records: dict[str, RunRecord], run_ids: list[str]) -> tuple[str, list[RunRecord]]:
    """(label, finished and running runs) among the selected ``run_ids``."""
    return f"{len(run_ids)} selected run(s)", _ordered([records[rid] for rid in run_ids if rid in records])


def _ordered(members: list[RunRecord]) -> list[RunRecord]:
    shown = [r for r in members if r.info.state in SHOWN_STATES]
    shown.sort(key=lambda r: (r.info.method or "", r.status.get("params") or 0, r.run_id))
    return shown


def _shown(runs: list[RunRecord]) -> list[tuple]:
    """What the screen shows of the runs (a live poll redraws when it changes)."""
    return [(r.run_id, r.cells, r.status.get("latency_ms_b1"), r.status.get("throughput")) for r in runs]


def error_of(record: RunRecord) -> float | None:
    """The error a comparison plots: test top-1 when measured, else best validation (a running run's so far)."""
    value = record.status.get("test_err1")
    return record.status.get("best_val_err1") if value is None else value


class CompareScreen(Screen[None]):
    """Table on the left, scatter on the right; Escape goes back."""

    DEFAULT_CSS = """
    CompareScreen > Label { dock: top; width: 1fr; background: $primary-darken-2; padding: 0 1; }
    CompareScreen DataTable { width: 3fr; height: 1fr; }
    CompareScreen PlotextPlot { width: 2fr; height: 1fr; }
    CompareScreen.-narrow Horizontal { layout: vertical; }
    CompareScreen.-narrow DataTable { width: 1fr; height: 1fr; }
    CompareScreen.-narrow PlotextPlot { width: 1fr; height: 2fr; }
    """

    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (110, "-wide")]
    BINDINGS = [Binding("escape,c,q", "close", "Back"), Binding("m", "switch_x", "Params / mult-adds"),
                Binding("L", "switch_latency", "Latency / throughput")]

    def __init__(self, label: str, runs: list[RunRecord],
                 live: Callable[[], tuple[str, list[RunRecord]]] | None = None) -> None:
        super().__init__()
        self.label = label
        self.runs = runs
        self.live = live
        self.x_key = "params"
        self.front: list[tuple[float, float]] = []  # the Pareto front drawn (tests)
        self.points: dict[str, list[tuple[float, float, bool]]] = {}  # method -> (x, err, running)
        self.device: str | None = None  # the device key a measured axis shows
        self.left_out = ""  # what a measured axis leaves out (other devices, runs without a latency)
        self.plot_title = ""

    def compose(self) -> ComposeResult:
        yield Label("", id="compare-title", markup=False)
        with Horizontal():
            yield DataTable(cursor_type="row", zebra_stripes=True)
            yield PlotextPlot()
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.add_columns("run", "state", "method", "hp", "budget", "params", "mult-adds", "best val err",
                          "test err")
        table.focus()
        self.redraw()
        self.call_after_refresh(self.draw)  # again once the plot has its size: the legend headroom needs it
        if self.live is not None:
            self.set_interval(1.0, self.poll)

    def poll(self) -> None:
        """Re-read the runs (a live sweep): redraw when any shown number changed."""
        label, runs = self.live()  # type: ignore[misc]
        if label != self.label or _shown(runs) != _shown(self.runs):
            self.label, self.runs = label, runs
            self.redraw()

    def redraw(self) -> None:
        table = self.query_one(DataTable)
        current = table.cursor_row
        table.clear()
        for record in self.runs:
            status, info = record.status, record.info
            table.add_row(Text(clean(info.name)), info.state, Text(clean(info.method or "-")), number(status.get("hp")),
                          "-" if info.budget is None else number(info.budget), count(status.get("params")),
                          count(status.get("macs")), pct(status.get("best_val_err1")), pct(status.get("test_err1")),
                          key=record.run_id)
        if table.row_count:
            table.move_cursor(row=min(current, table.row_count - 1), animate=False)
        self.draw()

    def _highlighted_key(self) -> str | None:
        """The device key of the highlighted row's latency (None: no row, or no latency)."""
        table = self.query_one(DataTable)
        if not table.row_count:
            return None
        try:
            run_id = table.coordinate_to_cell_key((table.cursor_row, 0)).row_key.value
        except Exception:  # noqa: BLE001 -- a row removed between the event and now
            return None
        record = next((r for r in self.runs if r.run_id == run_id), None)
        return device_key(record.status) if record is not None else None

    def _measured_runs(self) -> tuple[list[RunRecord], str | None, str]:
        """(the runs a measured axis plots, their device key, what was left out): finished runs with
        a latency on one device key -- the highlighted row's, else the one most runs share."""
        timed = [r for r in self.runs if r.info.state == "finished" and device_key(r.status)]
        counts = device_keys(r.status for r in timed)
        if not counts:
            return [], None, ""
        key = self._highlighted_key()
        if key not in counts:
            key = max(counts, key=lambda name: (counts[name], name))
        shown = [r for r in timed if device_key(r.status) == key]
        parts = []
        if len(timed) > len(shown):
            parts.append(f"{len(timed) - len(shown)} on {len(counts) - 1} other device(s)")
        if len(self.runs) > len(timed):
            parts.append(f"{len(self.runs) - len(timed)} without a latency")
        left = f"{len(self.runs) - len(shown)} of {len(self.runs)} runs left out ({', '.join(parts)})" if parts else ""
        return shown, key, left

    def _title(self) -> str:
        finished = sum(r.info.state == "finished" for r in self.runs)
        running = len(self.runs) - finished
        text = f"compare: {clean(self.label)} · {finished} finished" + (f", {running} running" if running else "")
        if X_AXES[self.x_key].measured:
            text += f" · measured on {clean(self.device)}" if self.device else " · no measured latency"
            text += f" · {self.left_out}" if self.left_out else ""
        return text

    def draw(self) -> None:
        """Error against the chosen axis, one marker per method, log x, the Pareto front."""
        plot = self.query_one(PlotextPlot)
        plt = plot.plt
        plt.clear_figure()
        axis: Axis = X_AXES[self.x_key]
        runs, self.device, self.left_out = self._measured_runs() if axis.measured else (self.runs, None, "")
        self.query_one("#compare-title", Label).update(self._title())
        self.plot_title = f"top-1 error vs {axis.label}" + (
            f" · {clean(self.device)}" if self.device else "") + (
            f" · {len(self.runs) - len(runs)} left out" if axis.measured and len(runs) < len(self.runs) else "")
        plt.title(self.plot_title)
        plt.xlabel(f"{axis.label} (log{'' if axis.lower_is_better else ', higher is better'})")
        self.points, self.front = {}, []
        for record in runs:
            x, err = record.status.get(axis.run_key), error_of(record)
            if isinstance(x, (int, float)) and err is not None and math.isfinite(err) and math.isfinite(x) and x > 0:
                self.points.setdefault(clean(record.info.method or "?"), []).append(
                    (float(x), float(err), record.info.state != "finished"))  # plotext prints labels raw
        if not self.points:
            empty = ("no measured latency here: sweeps record one (bench.after_run)" if axis.measured and not runs
                     else "no errors measured yet")
            plt.text(empty, 0.5, 0.5, alignment="center")
            plt.xlim(0, 1)
            plt.ylim(0, 1)
            plot.refresh()
            return
        every = [(x, y) for pts in self.points.values() for x, y, _ in pts]
        self.front = pareto_front(((x, y) for pts in self.points.values() for x, y, running in pts if not running),
                                  higher_is_better=not axis.lower_is_better)
        if len(self.front) > 1:
            plt.plot([math.log10(x) for x, _ in self.front], [y for _, y in self.front], label="Pareto front",
                     marker="braille", color="gray")
        for index, (method, pts) in enumerate(sorted(self.points.items())):
            for hollow in (False, True):
                chosen = [(x, y) for x, y, running in pts if running == hollow]
                if chosen:
                    plt.scatter([math.log10(x) for x, _ in chosen], [y for _, y in chosen],
                                label=f"{method} (running)" if hollow else method, marker=marker(index, hollow))
        legend_rows = sum(1 + any(r for *_, r in pts) for pts in self.points.values()) + (len(self.front) > 1)
        xs, ys = [x for x, _ in every], [y for _, y in every]
        lo, hi, ticks = log_axis(xs)
        plt.xlim(lo, hi)
        plt.xticks([math.log10(t) for t in ticks], [tick_label(t) for t in ticks])
        y_lo, y_hi = headroom(ys, legend_rows, max(6, plot.size.height - 5))
        plt.ylim(y_lo, y_hi)
        y_ticks = linear_ticks(min(ys), max(ys))
        plt.yticks(y_ticks, [tick_label(t) for t in y_ticks])
        plot.refresh()

    def on_resize(self) -> None:
        self.draw()

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        """On a measured axis, another row may name another device: plot that one's runs."""
        if X_AXES[self.x_key].measured and len(device_keys(r.status for r in self.runs)) > 1:
            self.draw()

    def action_switch_x(self) -> None:
        """Parameters <-> mult-adds (from a measured axis: parameters)."""
        self.x_key = "macs" if self.x_key == "params" else "params"
        self.draw()

    def action_switch_latency(self) -> None:
        """Measured latency at batch 1 <-> throughput (from parameters or mult-adds: latency)."""
        self.x_key = "throughput" if self.x_key == "latency" else "latency"
        self.draw()

    def action_close(self) -> None:
        self.dismiss(None)
