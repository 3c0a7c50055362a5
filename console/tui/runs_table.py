"""The runs table: one row per run, updated in place (only the cells that changed),
sortable (click a header, ``s`` picks a column, ``S`` reverses), filterable (``/``),
multi-select (space, ``a`` all, Escape none), vim/less keys (``j``/``k``, ``g``/``G``, Home/End).

It fits any terminal: the columns shown and their widths come from
:func:`~.format.fit_columns` (state, error and epoch outlast the id and name), ids are
shown as their short unique tail, and the layout is recomputed when the table is resized.
"""

from __future__ import annotations

from rich.text import Text
from textual.binding import Binding
from textual.coordinate import Coordinate
from textual.events import Resize
from textual.message import Message
from textual.widgets import DataTable

from console.safe_text import clean

from .format import COLUMNS, DATA_COLUMNS, SORT_KEYS, STATE_STYLES, clip, fit_columns, matches, short_ids
from .watch import RunRecord

MARK = "●"
SCROLLBAR = 2  # the vertical scrollbar's width, kept free so it never covers a cell


class RowKeyCell(str):
    """The mark column's cell: shows the mark, and carries the run id so a sort can find the run."""

    run_id: str

    def __new__(cls, text: str, run_id: str) -> "RowKeyCell":
        cell = super().__new__(cls, text)
        cell.run_id = run_id
        return cell


class RunsTable(DataTable):
    """Every run (that passes the filter); rows keyed by run id."""

    DEFAULT_CSS = """
    RunsTable {
        height: 1fr;
        border: round $primary-darken-2;
        border-title-color: $text-muted;
        overflow-x: hidden;
    }
    RunsTable:focus { border: round $accent; }
    """

    BINDINGS = [
        Binding("space", "toggle_mark", "Select", show=True),
        Binding("a", "mark_all", "Select all", show=False),
        Binding("escape", "clear_marks", "Clear selection", show=False),
        Binding("j", "cursor_down", "Down", show=False),
        Binding("k", "cursor_up", "Up", show=False),
        Binding("g,home", "first_row", "First", show=False),
        Binding("G,end", "last_row", "Last", show=False),
        Binding("s", "pick_sort", "Sort", show=False),
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
        self.column_layout: tuple[tuple[str, int], ...] = ()  # (column key, width) shown now
        self.short: dict[str, str] = {}  # run id -> the tail shown in the id column

    def on_mount(self) -> None:
        self._relayout()
        self._title()

    def on_resize(self, event: Resize) -> None:
        self._relayout()

    # -- layout ----------------------------------------------------------------------
    @property
    def shown_columns(self) -> tuple[str, ...]:
        """Keys of the columns on screen now, in display order."""
        return tuple(key for key, _ in self.column_layout)

    def _relayout(self) -> None:
        """Choose columns and widths for the current width; rebuild the table when they change."""
        width = (self.size.width or 160) - SCROLLBAR
        names = [len(record.info.name or "") for record in self.records.values()]
        models = [len(record.info.model or "") for record in self.records.values()]
        layout = fit_columns(width, max(map(len, self.short.values()), default=4), max(names, default=4),
                             max(models, default=0))
        if layout == self.column_layout:
            return
        current = self.highlighted
        self.column_layout = layout
        self.clear(columns=True)
        self._shown = {}
        headers = dict(COLUMNS)
        for key, col_width in layout:
            self.add_column(Text(headers[key]), width=col_width, key=key)
        self._sync(keep=current)

    def _cell(self, column: str, value: str, rid: str) -> str | Text:
        marked = rid in self.marked
        if column == "state":
            return Text(value, style=STATE_STYLES.get(value.split("/")[0], ""))  # failed/TIMEOUT: failed's
        if column == "id":
            return Text(self.short.get(rid, rid), style="bold magenta" if marked else "")
        if column == "name":
            return Text(clip(clean(value), dict(self.column_layout).get("name", len(value))))
        return Text(clean(value))

    # -- data ------------------------------------------------------------------------
    def set_records(self, records: dict[str, RunRecord]) -> None:
        """Show a new reading of the runs: add, remove and update only what differs."""
        self.records = records
        self.marked &= set(records)
        short = short_ids(list(records))
        if short != self.short:
            self.short = short
            for rid in self._shown:  # a new run can lengthen another's short id
                if "id" in self.shown_columns:
                    self.update_cell(rid, "id", self._cell("id", rid, rid))
        before = self.column_layout
        self._relayout()
        if self.column_layout == before:
            self._sync()

    def set_query(self, query: str) -> None:
        self.query = query.strip()
        self._sync()

    def _sync(self, keep: str | None = None) -> None:
        visible = [rid for rid, record in self.records.items() if matches(record.info, self.query)]
        was_empty = not self._shown
        gone = set(self._shown) - set(visible)
        shown = self.shown_columns
        if len(gone) > 20:  # remove_row is O(rows): rebuilding is faster for a big filter change
            keep = keep or self.highlighted
            self.clear()
            self._shown = {}
            was_empty = False
        else:
            for rid in gone:
                self.remove_row(rid)
                del self._shown[rid]
        if keep in visible:
            visible.remove(keep)
            visible.insert(0, keep)  # re-added first, so the cursor stays on it
        resort = False
        for rid in visible:
            cells = self.records[rid].cells
            old = self._shown.get(rid)
            if old is None:
                values = dict(zip(DATA_COLUMNS, cells))
                self.add_row(*(RowKeyCell(MARK if rid in self.marked else " ", rid) if key == "mark"
                               else self._cell(key, values[key], rid) for key in shown), key=rid)
                resort = True
            elif old != cells:
                for column, new, before in zip(DATA_COLUMNS, cells, old):
                    if new != before and column in shown:
                        self.update_cell(rid, column, self._cell(column, new, rid))
                        resort = resort or column == self.sort_column
            self._shown[rid] = cells
        if resort:
            self.apply_sort()
        if keep is not None and keep in self._shown:
            self.move_cursor(row=self.get_row_index(keep), animate=False)
        elif was_empty and self._shown:
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

    @property
    def visible_ids(self) -> list[str]:
        """Run ids of the rows shown (those that pass the filter), top to bottom."""
        return [self.coordinate_to_cell_key(Coordinate(row, 0)).row_key.value for row in range(self.row_count)]

    def targets(self) -> list[str]:
        """What an action applies to: the marked runs, else the highlighted one."""
        if self.marked:
            return sorted(self.marked)
        return [self.highlighted] if self.highlighted else []

    def _set_marks(self, marked: set[str]) -> None:
        changed = self.marked ^ marked
        self.marked = marked
        for rid in changed & set(self._shown):
            self.update_cell(rid, "mark", RowKeyCell(MARK if rid in marked else " ", rid))
            if "id" in self.shown_columns:
                self.update_cell(rid, "id", self._cell("id", rid, rid))
        self.post_message(self.MarksChanged(frozenset(self.marked)))
        self._title()

    def action_toggle_mark(self) -> None:
        """Space: select or unselect the highlighted run, then move down (to select a run of rows fast)."""
        rid = self.highlighted
        if rid is None:
            return
        self._set_marks(self.marked ^ {rid})
        if self.cursor_row < self.row_count - 1:
            self.move_cursor(row=self.cursor_row + 1)

    def action_mark_all(self) -> None:
        """Select every run the filter shows (all of them already selected: unselect them)."""
        visible = set(self.visible_ids)
        self._set_marks(self.marked - visible if visible <= self.marked else self.marked | visible)

    def action_clear_marks(self) -> None:
        if self.marked:
            self._set_marks(set())

    def action_first_row(self) -> None:
        if self.row_count:
            self.move_cursor(row=0)

    def action_last_row(self) -> None:
        if self.row_count:
            self.move_cursor(row=self.row_count - 1)

    # -- sorting ---------------------------------------------------------------------
    def apply_sort(self) -> None:
        """Order rows by the sort column, keeping the cursor on the same run."""
        current = self.highlighted
        key = SORT_KEYS[self.sort_column]
        self.sort("mark", key=lambda cell: key(self.records[cell.run_id].info), reverse=self.sort_reverse)
        if current is not None:
            self.move_cursor(row=self.get_row_index(current), animate=False)
        self._title()

    def sort_by(self, column: str, reverse: bool | None = None) -> None:
        """Sort by ``column``; the same column again reverses the order (unless ``reverse`` is given)."""
        if reverse is not None:
            self.sort_column, self.sort_reverse = column, reverse
        elif column == self.sort_column:
            self.sort_reverse = not self.sort_reverse
        else:
            self.sort_column, self.sort_reverse = column, column in ("id", "elapsed")
        self.apply_sort()

    def on_data_table_header_selected(self, event: DataTable.HeaderSelected) -> None:
        event.stop()
        self.sort_by(str(event.column_key.value))

    def action_pick_sort(self) -> None:
        """``s``: choose the sort column from a list (every column, shown or not)."""
        from .sort_screen import SortScreen

        def chosen(column: str | None) -> None:
            if column:
                self.sort_by(column)

        self.app.push_screen(SortScreen(self.sort_column, self.sort_reverse), chosen)

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


__all__ = ["MARK", "RunsTable", "DATA_COLUMNS"]
