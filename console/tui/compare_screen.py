"""``c``: finished runs of one family -- the same sweep, or the same model and dataset -- as a
table (method, hp/budget, params, mult-adds, errors) and an error-vs-parameters scatter."""

from __future__ import annotations

import math

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Label
from textual_plotext import PlotextPlot

from .format import count, number, pct
from .watch import RunRecord


def family(records: dict[str, RunRecord], run_id: str) -> tuple[str, list[RunRecord]]:
    """(label, finished runs) of ``run_id``'s family: its sweep if it has one, else model + dataset."""
    base = records[run_id]
    sweep = base.status.get("sweep")
    if sweep:
        members = [r for r in records.values() if r.status.get("sweep") == sweep]
        label = f"sweep {sweep}"
    else:
        key = (base.info.model, base.info.dataset)
        members = [r for r in records.values() if (r.info.model, r.info.dataset) == key]
        label = f"{base.info.model or '?'} on {base.info.dataset or '?'}"
    finished = [r for r in members if r.info.state == "finished"]
    finished.sort(key=lambda r: (r.info.method or "", r.status.get("params") or 0, r.run_id))
    return label, finished


def error_of(record: RunRecord) -> float | None:
    """The error a comparison plots: test top-1 when measured, else best validation."""
    value = record.status.get("test_err1")
    return record.status.get("best_val_err1") if value is None else value


class CompareScreen(Screen[None]):
    """Table on the left, scatter on the right; Escape goes back."""

    DEFAULT_CSS = """
    CompareScreen > Label { dock: top; width: 1fr; background: $primary-darken-2; padding: 0 1; }
    CompareScreen DataTable { width: 3fr; height: 1fr; }
    CompareScreen PlotextPlot { width: 2fr; height: 1fr; }
    """

    BINDINGS = [Binding("escape,c,q", "close", "Back")]

    def __init__(self, label: str, runs: list[RunRecord]) -> None:
        super().__init__()
        self.label = label
        self.runs = runs

    def compose(self) -> ComposeResult:
        yield Label(f"compare: {self.label} · {len(self.runs)} finished run(s)", markup=False)
        with Horizontal():
            yield DataTable(cursor_type="row", zebra_stripes=True)
            yield PlotextPlot()
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.add_columns("run", "method", "hp", "budget", "params", "mult-adds", "best val err", "test err")
        for record in self.runs:
            status, info = record.status, record.info
            table.add_row(info.name, info.method or "-", number(status.get("hp")),
                          "-" if info.budget is None else number(info.budget), count(status.get("params")),
                          count(status.get("macs")), pct(status.get("best_val_err1")), pct(status.get("test_err1")),
                          key=record.run_id)
        table.focus()
        self.draw()

    def draw(self) -> None:
        """Error against parameters, one series per method, log-scaled x."""
        plt = self.query_one(PlotextPlot).plt
        plt.clear_figure()
        plt.title("top-1 error vs parameters")
        plt.xlabel("parameters (log)")
        by_method: dict[str, tuple[list[float], list[float]]] = {}
        for record in self.runs:
            params, err = record.status.get("params"), error_of(record)
            if params and err is not None and math.isfinite(err):
                xs, ys = by_method.setdefault(record.info.method or "?", ([], []))
                xs.append(float(params))
                ys.append(float(err))
        for method, (xs, ys) in sorted(by_method.items()):
            plt.scatter(xs, ys, label=method)
        if by_method:
            plt.xscale("log")
        self.query_one(PlotextPlot).refresh()

    def action_close(self) -> None:
        self.dismiss(None)
