"""``T``: hyperparameter studies (``lowrank tune``) and the trials of the highlighted one.

Read from the study manifests and the trials' run statuses (:mod:`console.tune.listing`):
no optuna, no torch, nothing written. Re-read every two seconds while open, so a running
study's trials change state as they finish or are pruned. Escape goes back.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Label

from console.safe_text import clean

from .format import STATE_STYLES

POLL_SECONDS = 2.0


def _value(value: Any) -> str:
    return "-" if value is None else f"{value:.4g}" if isinstance(value, float) else clean(value)


def _params(params: dict[str, Any]) -> str:
    return "  ".join(f"{clean(key)}={_value(value)}" for key, value in params.items())


class StudiesScreen(Screen[None]):
    """Studies on top, the highlighted study's trials below."""

    DEFAULT_CSS = """
    StudiesScreen > Label { dock: top; width: 1fr; background: $primary-darken-2; padding: 0 1; }
    StudiesScreen #studies { height: 1fr; }
    StudiesScreen #trials { height: 2fr; }
    """
    BINDINGS = [Binding("escape,q,T", "close", "Back")]

    def __init__(self, home: Path) -> None:
        super().__init__()
        self.home = home
        self.studies: list[dict[str, Any]] = []
        self.shown: str | None = None

    def compose(self) -> ComposeResult:
        yield Label("", id="studies-title", markup=False)
        yield DataTable(id="studies", cursor_type="row", zebra_stripes=True)
        yield DataTable(id="trials", cursor_type="row", zebra_stripes=True)
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#studies", DataTable).add_columns("study", "preset", "metric", "pruner", "trials", "states",
                                                          "best")
        self.query_one("#trials", DataTable).add_columns("trial", "state", "value", "epoch", "params", "run")
        self.query_one("#studies", DataTable).focus()
        self.reload()
        self.set_interval(POLL_SECONDS, self.reload)

    def reload(self) -> None:
        from console.tune.listing import list_studies

        self.studies = list_studies(self.home)
        self.query_one("#studies-title", Label).update(
            f"studies: {len(self.studies)} in {clean(self.home)}" if self.studies
            else "no studies yet (lowrank tune PRESET --space KEY=SPEC --trials N)")
        table = self.query_one("#studies", DataTable)
        row = table.cursor_row
        table.clear()
        for item in self.studies:
            best = item["best"]
            table.add_row(Text(clean(item["study"])), Text(clean(item["preset"] or "-")),
                          Text(clean(item["metric"] or "-")), Text(clean(item["pruner"] or "-")),
                          f"{item['trials']}/{item['trials_requested'] or '?'}",
                          Text(", ".join(f"{clean(k)} {v}" for k, v in item["states"].items())),
                          "-" if best is None else f"{best['value']:.4g} (trial {best['number']})", key=item["study"])
        if table.row_count:
            table.move_cursor(row=min(row, table.row_count - 1), animate=False)
        self.show_trials()

    def show_trials(self) -> None:
        table = self.query_one("#studies", DataTable)
        index = table.cursor_row
        item = self.studies[index] if 0 <= index < len(self.studies) else None
        trials = self.query_one("#trials", DataTable)
        trials.clear()
        self.shown = item["study"] if item else None
        for row in (item or {}).get("rows", []):
            style = STATE_STYLES.get(row["state"], "")
            trials.add_row(str(row["number"]), Text(clean(row["state"]), style=style), _value(row["value"]),
                           f"{_value(row['epoch'])}/{_value(row['epochs'])}", Text(_params(row["params"])),
                           Text(clean(row["run_id"] or row.get("error") or "-")))

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.data_table.id == "studies":
            self.show_trials()

    def action_close(self) -> None:
        self.dismiss(None)
