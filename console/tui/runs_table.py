"""The runs table: one row per run, updated in place (only the cells that changed),
sortable (click a header, ``s`` / ``S``), filterable (``/``), multi-select with space."""

from __future__ import annotations

from rich.text import Text
from textual.binding import Binding
from textual.coordinate import Coordinate
from textual.message import Message
from textual.widgets import DataTable

from .format import COLUMNS, DATA_COLUMNS, SORT_KEYS, STATE_STYLES, matches
from .watch import RunRecord

MARK = "●"


def _cell(column: str, value: str, marked: bool = False) -> str | Text:
    if column == "state":
        return Text(value, style=STATE_STYLES.get(value, ""))
    if column == "id" and marked:
        return Text(value, style="bold magenta")
    return value


class RunsTable(DataTable):
    """Every run (that passes the filter); rows keyed by run id."""

    DEFAULT_CSS = """
    RunsTable {
        height: 1fr;
        border: round $primary-darken-2;
        border-title-color: $text-muted;
    }
    RunsTable:focus { border: round $accent; }
    """

    BINDINGS = [
        Binding("space", "toggle_mark", "Select", show=True),
        Binding("s", "cycle_sort", "Sort", show=False),
        Binding("S", "reverse_sort", "Reverse sort", show=False),
    ]

    class MarksChanged(Message):
        """The set of multi-selected runs changed."""

        def __init__(self, marked: frozenset[str]) -> None:
            super().__init__()
            self.marked = marked

    def __init__(self, **kwargs) -> None:
        super().__init__(cursor_type="row", zebra_stripes=True, **kwargs)
        self.records: dict[str, RunRecord] = {}
        self.marked: set[str] = set()
        self.query = ""
        self.sort_column = "id"
        self.sort_reverse = True  # newest first
        self._shown: dict[str, tuple[str, ...]] = {}

    def on_mount(self) -> None:
        for key, label in COLUMNS:
            self.add_column(label, key=key)
        self._title()

    # -- data ------------------------------------------------------------------------
    def set_records(self, records: dict[str, RunRecord]) -> None:
        """Show a new reading of the runs: add, remove and update only what differs."""
        self.records = records
        self.marked &= set(records)
        self._sync()

    def set_query(self, query: str) -> None:
        self.query = query.strip()
        self._sync()

    def _sync(self) -> None:
        visible = [rid for rid, record in self.records.items() if matches(record.info, self.query)]
        was_empty = not self._shown
        gone = set(self._shown) - set(visible)
        if len(gone) > 20:  # remove_row is O(rows): rebuilding is faster for a big filter change
            current = self.highlighted
            self.clear()
            self._shown = {}
            if current in visible:
                visible.remove(current)
                visible.insert(0, current)  # re-added first, so the cursor stays on it
        else:
            for rid in gone:
                self.remove_row(rid)
                del self._shown[rid]
        resort = False
        for rid in visible:
            cells = self.records[rid].cells
            old = self._shown.get(rid)
            if old is None:
                marked = rid in self.marked
                self.add_row(MARK if marked else " ",
                             *(_cell(col, value, marked) for col, value in zip(DATA_COLUMNS, cells)), key=rid)
                resort = True
            elif old != cells:
                for column, new, before in zip(DATA_COLUMNS, cells, old):
                    if new != before:
                        self.update_cell(rid, column, _cell(column, new, rid in self.marked))
                        resort = resort or column == self.sort_column
            self._shown[rid] = cells
        if resort:
            self.apply_sort()
        if was_empty and self._shown:
            self.move_cursor(row=0, animate=False)  # first rows: start at the top
        self._title()

    # -- selection -------------------------------------------------------------------
    @property
    def highlighted(self) -> str | None:
        """Run id under the cursor (None in an empty table)."""
        if not self.row_count:
            return None
        row = min(self.cursor_row, self.row_count - 1)
        return self.coordinate_to_cell_key(Coordinate(row, 0)).row_key.value

    def targets(self) -> list[str]:
        """What an action applies to: the marked runs, else the highlighted one."""
        if self.marked:
            return sorted(self.marked)
        return [self.highlighted] if self.highlighted else []

    def action_toggle_mark(self) -> None:
        rid = self.highlighted
        if rid is None:
            return
        self.marked ^= {rid}
        marked = rid in self.marked
        self.update_cell(rid, "mark", MARK if marked else " ")
        self.update_cell(rid, "id", _cell("id", rid, marked))
        self.post_message(self.MarksChanged(frozenset(self.marked)))
        self._title()
        if self.cursor_row < self.row_count - 1:
            self.move_cursor(row=self.cursor_row + 1)

    # -- sorting ---------------------------------------------------------------------
    def apply_sort(self) -> None:
        """Order rows by the sort column, keeping the cursor on the same run."""
        current = self.highlighted
        key = SORT_KEYS[self.sort_column]
        self.sort("id", key=lambda cell: key(self.records[str(cell)].info), reverse=self.sort_reverse)
        if current is not None:
            self.move_cursor(row=self.get_row_index(current), animate=False)
        self._title()

    def sort_by(self, column: str) -> None:
        """Sort by ``column``; the same column again reverses the order."""
        if column == self.sort_column:
            self.sort_reverse = not self.sort_reverse
        else:
            self.sort_column, self.sort_reverse = column, column in ("id", "elapsed")
        self.apply_sort()

    def on_data_table_header_selected(self, event: DataTable.HeaderSelected) -> None:
        event.stop()
        self.sort_by(str(event.column_key.value))

    def action_cycle_sort(self) -> None:
        keys = list(DATA_COLUMNS)
        self.sort_column = keys[(keys.index(self.sort_column) + 1) % len(keys)] if self.sort_column in keys else "id"
        self.apply_sort()

    def action_reverse_sort(self) -> None:
        self.sort_by(self.sort_column)

    def _title(self) -> None:
        arrow = "▼" if self.sort_reverse else "▲"
        label = dict(COLUMNS).get(self.sort_column, self.sort_column)
        parts = [f"runs {len(self._shown)}/{len(self.records)}", f"sort {label} {arrow}"]
        if self.query:
            parts.append(f"filter: {self.query}")
        if self.marked:
            parts.append(f"{len(self.marked)} selected")
        self.border_title = " · ".join(parts)
