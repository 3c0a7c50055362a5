"""The console at any terminal size (columns by priority, short ids, reflowed panels) and its
selection keys (j/k, g/G, Home/End, a, Escape, the sort picker, c on a selection), the compare
scatter's ticks, markers and Pareto front, and a help screen that opens without Markdown."""

from __future__ import annotations

import pytest
from textual.widgets import Header, OptionList

from console.tui.app import LowrankConsole
from console.tui.compare_screen import CompareScreen
from console.tui.format import PRIORITY, fit_columns, short_ids
from console.tui.help_screen import HelpScreen
from console.tui.runs_table import RunsTable
from console.tui.scatter import FILLED, HOLLOW, headroom, linear_ticks, log_axis, log_ticks, marker, pareto_front, tick_label
from console.tui.sort_screen import SortScreen
from tui_helpers import NOW, fake_snapshot, make_run, settle


def console(home) -> LowrankConsole:
    return LowrankConsole(home, snapshot_fn=fake_snapshot, clock=lambda: NOW, poll_interval=0.1, host_interval=0.2)


@pytest.fixture
def many(home):
    """Nine runs with long names (the issue's `quickstart-generic-0.05-...`), one failed, one running."""
    for i in range(7):
        make_run(home, f"20240301-12{i:02d}00-quickstart-generic-0.05-seed{i}-a00{i}", method="generic",
                 err=6.0 + i, params=1_000_000 + 100_000 * i)
    make_run(home, "20240301-121000-resnet-bad-b001", state="failed", model="resnet9", method="hashed", epoch=3)
    make_run(home, "20240301-121100-wrn-live-b002", state="running", method="cp", epoch=4, host="elsewhere")
    return home


# -- pure layout ------------------------------------------------------------------------
@pytest.mark.parametrize("width", [40, 76, 116, 196])
def test_columns_collapse_by_priority_and_fit(width):
    layout = fit_columns(width, id_width=4, name_width=40)
    keys = [key for key, _ in layout]
    assert sum(w + 2 for _, w in layout) <= width
    kept = [key for key in PRIORITY if key in keys]
    # what is shown is a prefix of the priority order, give or take columns too wide to fit
    assert kept[:4] == [key for key in PRIORITY[:4]]  # mark, state, err, epoch always outlast the id
    if width >= 76:
        assert {"id", "name", "state", "err", "epoch"} <= set(keys)
    if width >= 196:
        assert set(keys) == set(PRIORITY)
        assert dict(layout)["name"] == 40  # a whole long name, not cut at 24


@pytest.mark.parametrize("width", [76, 116, 160, 196])
def test_model_column_grows_into_spare_width(width):
    """A long model name (tiny_convnet, wrn50_2_imagenet) is whole when there is room, and the
    layout still fits; where there is none the column keeps its 9 cells."""
    layout = dict(fit_columns(width, id_width=4, name_width=20, model_width=16))
    assert sum(w + 2 for w in layout.values()) <= width
    if "model" in layout:
        spare = width - sum(w + 2 for w in layout.values())
        assert layout["model"] == 16 or (layout["model"] >= 9 and spare == 0)
    if width >= 160:
        assert layout["model"] == 16


def test_short_ids_are_unique_tails():
    ids = ["20240301-120000-quickstart-987b", "20240301-120100-quickstart-a006", "20240302-090000-wrn-live-a006"]
    short = short_ids(ids)
    assert short["20240301-120000-quickstart-987b"] == "987b"
    assert short["20240301-120100-quickstart-a006"] == "quickstart-a006"
    assert short["20240302-090000-wrn-live-a006"] == "live-a006"
    assert len(set(short.values())) == 3 and all(rid.endswith(tail) for rid, tail in short.items())


# -- three terminal sizes -----------------------------------------------------------------
@pytest.mark.parametrize("size", [(80, 24), (120, 40), (200, 60)])
@pytest.mark.subprocess
async def test_every_size_shows_state_error_epoch_and_all_rows(many, size):
    app = console(many)
    async with app.run_test(size=size) as pilot:
        table = app.query_one(RunsTable)
        await settle(pilot, lambda: table.row_count == 9 and app.snapshot is not None, what="rows")
        await pilot.pause(0.2)
        shown = table.shown_columns
        assert {"state", "err", "epoch", "id", "name"} <= set(shown)
        assert table.max_scroll_x == 0  # nothing off to the right
        assert app.screen.max_scroll_y == 0 and app.screen.max_scroll_x == 0  # no screen scrollbar
        visible_rows = table.scrollable_content_region.height - 1  # minus the header row
        assert visible_rows >= (6 if size[1] == 24 else 9)
        id_cells = [str(table.get_cell_at((row, table.get_column_index("id")))) for row in range(table.row_count)]
        assert id_cells[0] == "b002" and max(map(len, id_cells)) <= 4  # short ids
        assert app.query_one(Header).display == (size[1] >= 32)
        if size[0] >= 200:
            names = [str(table.get_cell_at((row, table.get_column_index("name")))) for row in range(table.row_count)]
            assert "quickstart-generic-0.05-seed6" in names  # not cut at 24


async def test_resize_relayouts_the_table(many):
    app = console(many)
    async with app.run_test(size=(200, 60)) as pilot:
        table = app.query_one(RunsTable)
        await settle(pilot, lambda: table.row_count == 9, what="rows")
        table.move_cursor(row=3)
        current = table.highlighted
        assert "gpu" in table.shown_columns
        await pilot.resize_terminal(80, 24)
        await settle(pilot, lambda: "gpu" not in table.shown_columns, what="narrow layout")
        assert table.row_count == 9 and table.highlighted == current and table.max_scroll_x == 0


# -- keys -------------------------------------------------------------------------------
@pytest.mark.slow
async def test_navigation_and_selection_keys(many):
    app = console(many)
    async with app.run_test(size=(120, 40)) as pilot:
        table = app.query_one(RunsTable)
        await settle(pilot, lambda: table.row_count == 9, what="rows")
        await pilot.press("j", "j")
        assert table.cursor_row == 2
        await pilot.press("k")
        assert table.cursor_row == 1
        await pilot.press("G")
        assert table.cursor_row == 8
        await pilot.press("g")
        assert table.cursor_row == 0
        await pilot.press("end")
        assert table.cursor_row == 8
        await pilot.press("home")
        assert table.cursor_row == 0
        await pilot.press("a")
        assert table.marked == set(app.records)
        await settle(pilot, lambda: len(app.marked) == 9, what="marks reach the app")
        await pilot.press("escape")
        assert table.marked == set()
        await pilot.press("slash", *"seed", "enter", "a")  # select all = all that the filter shows
        assert len(table.marked) == 7
        await pilot.press("a")  # again: unselect them
        assert table.marked == set()


async def test_sort_picker_chooses_any_column(many):
    app = console(many)
    async with app.run_test(size=(120, 40)) as pilot:
        table = app.query_one(RunsTable)
        await settle(pilot, lambda: table.row_count == 9, what="rows")
        await pilot.press("s")
        await settle(pilot, lambda: isinstance(app.screen, SortScreen), what="picker")
        menu = app.screen.query_one(OptionList)
        assert menu.option_count == 12  # every data column, even those a narrow table hides
        menu.highlighted = menu.get_option_index("err")
        await pilot.press("enter")
        await settle(pilot, lambda: table.sort_column == "err", what="sorted")
        errs = [float(str(table.get_cell_at((r, table.get_column_index("err")))).rstrip("%"))
                for r in range(table.row_count)]
        assert errs == sorted(errs)


async def test_compare_uses_the_multi_selection(many):
    app = console(many)
    async with app.run_test(size=(120, 40)) as pilot:
        table = app.query_one(RunsTable)
        await settle(pilot, lambda: table.row_count == 9, what="rows")
        await pilot.press("G", "space")  # the oldest run (cursor stays on the last row)
        await pilot.press("k", "space")  # and the one above it
        await pilot.press("g")  # highlight the running run: its family is every wrn run
        await pilot.press("c")
        await settle(pilot, lambda: isinstance(app.screen, CompareScreen), what="compare")
        assert sorted(r.run_id for r in app.screen.runs) == sorted(table.marked)
        assert len(app.screen.runs) == 2


async def test_help_is_a_table_that_says_space_moves_down(many):
    app = console(many)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot, lambda: app.query_one(RunsTable).row_count == 9, what="rows")
        await pilot.press("question_mark")
        await settle(pilot, lambda: isinstance(app.screen, HelpScreen), what="help")
        assert not app.screen.query("Markdown")  # markdown-it made `?` take seconds under load
        assert app.screen.query_one("#help-text").region.height > 10  # the table is on screen


def test_help_text_names_every_key():
    from console.tui.help_screen import help_renderable
    from rich.console import Console

    console_ = Console(width=100, record=True)
    console_.print(help_renderable())
    text = console_.export_text()
    for key in ("space", "select / unselect the highlighted run and move down", "j / k", "g / G", "Home / End",
                "select every run shown", "sort by a column", "x", "kill"):
        assert key in text


# -- the compare scatter -------------------------------------------------------------------
def test_log_ticks_are_round():
    ticks = log_ticks(3786.0, 4491.3)
    assert ticks and all(len(f"{t:g}") <= 4 for t in ticks)  # 3800, 4000, 4500 -- not 3786.0
    assert log_ticks(40_000, 2_500_000) == [50_000, 100_000, 200_000, 500_000, 1_000_000, 2_000_000]
    assert linear_ticks(6.3, 23.0) == [10, 15, 20] or linear_ticks(6.3, 23.0) == [10.0, 15.0, 20.0]


def test_markers_differ_without_colour_and_hollow_for_running():
    assert len({marker(i) for i in range(len(FILLED))}) == len(FILLED)
    assert marker(0) != marker(0, hollow=True) and marker(1, hollow=True) == HOLLOW[1]


def test_pareto_front_and_legend_headroom():
    points = [(1e6, 7.0), (5e5, 8.0), (2e6, 6.0), (1.5e6, 7.5), (3e6, 6.2)]
    assert pareto_front(points) == [(5e5, 8.0), (1e6, 7.0), (2e6, 6.0)]
    low, high = headroom([6.0, 8.0], legend_rows=3, plot_rows=12)
    # the top 3 rows (legend) hold no point: 8.0 sits below the first legend-free row
    row_of_8 = (high - 8.0) / (high - low) * 12
    assert row_of_8 >= 3


async def test_compare_scatter_draws_the_front(many):
    app = console(many)
    async with app.run_test(size=(200, 60)) as pilot:
        table = app.query_one(RunsTable)
        await settle(pilot, lambda: table.row_count == 9, what="rows")
        await pilot.press("G", "c")  # the oldest quickstart run: its family is the wrn/cifar10 runs
        await settle(pilot, lambda: isinstance(app.screen, CompareScreen), what="compare")
        screen = app.screen
        await pilot.pause(0.2)
        # error grows with params in this family, so only the cheapest point is on the front
        assert screen.front == [(1_000_000.0, 6.0)]
        assert "cp" in screen.points and screen.points["cp"][0][2] is True  # running: hollow
        await pilot.press("m")
        assert screen.x_key == "macs"


def test_detail_labels_never_touch_their_values():
    from console.tui.detail import field_label

    for label in ("id", "relaunched from", "CUDA (torch build)", "a label longer than sixteen"):
        text = field_label(label) + "13.0"
        assert text.startswith(label + " ") and text.endswith(" 13.0")
    assert len(field_label("id")) == 16  # the column stays aligned for short labels


@pytest.mark.parametrize("xs", [[3754, 3786], [3786, 4491.3], [1_000_000, 1_000_500], [7538], [11_018, 11_018],
                                [40_000, 2_500_000], [0.5, 0.52], [999, 1001]])
def test_log_axis_always_has_round_ticks_inside_its_limits(xs):
    """A sweep of near-equal budgets (3,754 and 3,786 params) drew an x axis with no tick at
    all: the one rounded value fell outside the limits."""
    import math

    lo, hi, ticks = log_axis(xs)
    assert lo < math.log10(min(xs)) and math.log10(max(xs)) < hi
    assert ticks and all(lo <= math.log10(t) <= hi for t in ticks)
    assert len({tick_label(t) for t in ticks}) == len(ticks)  # distinct labels
    assert all(float(f"{t:.4g}") == t for t in ticks)  # round: at most 4 significant digits
    if max(xs) > min(xs) * 1.005:
        assert len(ticks) >= 2
