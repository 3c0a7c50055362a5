"""Pilot tests of the console against prepared run directories: every key action."""

from __future__ import annotations

import socket

import psutil
import pytest
from textual.widgets import DataTable, OptionList, Select

from console.tui.app import LowrankConsole
from console.tui.compare_screen import CompareScreen
from console.tui.confirm_screen import ConfirmScreen
from console.tui.detail import RunDetail
from console.tui.gpu_panel import GpuPanel
from console.tui.help_screen import HelpScreen
from console.tui.log_screen import LogScreen
from console.tui.relaunch_screen import RelaunchScreen
from console.tui.runs_table import MARK, RunsTable
from console.tui.sort_screen import SortScreen
from lowrank.rundir import RunDir
from tui_helpers import NOW, fake_snapshot, make_run, no_gpu_snapshot, settle

SIZE = (160, 45)
HOST = socket.gethostname()


def console(home, **kwargs) -> LowrankConsole:
    kwargs.setdefault("snapshot_fn", fake_snapshot)
    app = LowrankConsole(home, clock=lambda: NOW, poll_interval=0.1, host_interval=0.2, **kwargs)
    app.notes = []  # every notification, for assertions
    original = app.notify

    def notify(message, **kw):
        app.notes.append((str(message), kw.get("severity", "information")))
        return original(message, **kw)

    app.notify = notify
    return app


def table(app) -> RunsTable:
    return app.query_one(RunsTable)


def column(app, key: str) -> list[str]:
    t = table(app)
    return [str(t.get_cell_at((row, t.get_column_index(key)))) for row in range(t.row_count)]


async def loaded(pilot, app, rows: int) -> None:
    await settle(pilot, lambda: table(app).row_count == rows and app.query_one(RunDetail).overlaid, what="rows")


@pytest.fixture
def family_home(home):
    """Four finished WRN runs (two methods), one failed, one running (no live process needed: other host)."""
    make_run(home, "20240301-120000-wrn-sep-a001", method="separable", err=6.0, params=1_200_000)
    make_run(home, "20240301-120100-wrn-tt-a002", method="tt", err=7.0, params=600_000)
    make_run(home, "20240301-120200-wrn-tt-a003", method="tt", err=6.4, params=900_000)
    make_run(home, "20240301-120300-wrn-sep-a004", method="separable", err=8.0, params=400_000)
    make_run(home, "20240301-120400-resnet-bad-a005", state="failed", model="resnet9", method="hashed", epoch=3)
    make_run(home, "20240301-120500-wrn-live-a006", state="running", method="cp", epoch=4, host="elsewhere")
    return home


async def test_table_rows_and_in_place_updates(family_home):
    app = console(family_home)
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot, app, 6)
        assert column(app, "id")[0] == "a006"  # newest first, shown by its short id
        assert table(app).highlighted == "20240301-120500-wrn-live-a006"
        assert column(app, "state")[:2] == ["running", "failed"]
        assert column(app, "epoch")[0] == "4/10"
        assert column(app, "elapsed")[0] == "1h00m"  # NOW - started, by the injected clock
        assert column(app, "eta")[0] == "1h30m"  # 60 min for 4 epochs -> 90 min for 6 more
        calls = []
        original = table(app).update_cell
        table(app).update_cell = lambda row, col, value, **kw: (calls.append((row, col)), original(row, col, value, **kw))
        RunDir(family_home / "runs" / "20240301-120500-wrn-live-a006").update_status(epoch=5, last_loss=0.5)
        await settle(pilot, lambda: column(app, "epoch")[0] == "5/10", what="epoch cell")
        assert set(calls) == {("20240301-120500-wrn-live-a006", col) for col in ("epoch", "loss", "eta")}


@pytest.mark.subprocess
async def test_gpu_panel_shows_gpus_runs_and_no_gpu(family_home):
    app = console(family_home)
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot, app, 6)
        await settle(pilot, lambda: "wrn-live" in app.query_one(GpuPanel).text, what="run on GPU0")
        text = app.query_one(GpuPanel).text
        assert "GPU0" in text and "GPU1" in text and "A100" in text and "87%" in text and "64°C" in text
        assert "idle" in text  # GPU1
    app = console(family_home, snapshot_fn=no_gpu_snapshot)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, lambda: "no GPU" in app.query_one(GpuPanel).text, what="no GPU")


async def test_sort_by_keys_and_header(family_home):
    app = console(family_home)
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot, app, 6)
        t = table(app)
        t.sort_by("err")
        await pilot.pause()
        errs = [float(v.rstrip("%")) for v in column(app, "err")]
        assert errs == sorted(errs)
        await pilot.press("S")
        assert [float(v.rstrip("%")) for v in column(app, "err")] == sorted(errs, reverse=True)
        await pilot.press("s")  # the sort picker
        await settle(pilot, lambda: isinstance(app.screen, SortScreen), what="sort picker")
        menu = app.screen.query_one(OptionList)
        menu.highlighted = menu.get_option_index("elapsed")
        await pilot.press("enter")
        await settle(pilot, lambda: t.sort_column == "elapsed", what="sorted by elapsed")
        t.post_message(DataTable.HeaderSelected(t, t.ordered_columns[3].key, 3, t.ordered_columns[3].label))
        await pilot.pause()
        assert t.sort_column == "model" and column(app, "model")[-1] == "wrn"
        assert column(app, "model")[0] == "resnet9"


@pytest.mark.slow
async def test_filter_by_text_and_state(family_home):
    app = console(family_home)
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot, app, 6)
        await pilot.press("slash", *"tt")  # letters that are also keys must go to the input
        await settle(pilot, lambda: table(app).row_count == 2, what="text filter")
        assert set(column(app, "method")) == {"tt"}
        await pilot.press("backspace", "backspace", *"failed", "enter")
        await settle(pilot, lambda: table(app).row_count == 1, what="state filter")
        assert column(app, "state") == ["failed"] and app.focused is table(app)
        assert not app.screen_stack[1:]  # typing "r", "l", "f" opened nothing
        await pilot.press("slash", "escape")
        await settle(pilot, lambda: table(app).row_count == 6, what="cleared filter")
        await pilot.press("f")  # state filter cycle: running
        await settle(pilot, lambda: column(app, "state") == ["running"], what="f -> running")


async def test_space_multiselect_overlays_curves(family_home):
    app = console(family_home)
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot, app, 6)
        assert app.query_one(RunDetail).overlaid == ["wrn-live-a006"]
        await pilot.press("space", "space")  # marks row 0, cursor moves down, marks row 1
        assert column(app, "mark")[:3] == [MARK, MARK, " "]
        await settle(pilot, lambda: len(app.query_one(RunDetail).overlaid) == 2, what="overlay")
        assert app.query_one(RunDetail).overlaid == ["resnet-bad-a005", "wrn-live-a006"]
        assert table(app).targets() == ["20240301-120400-resnet-bad-a005", "20240301-120500-wrn-live-a006"]
        await pilot.press("up", "space")
        await settle(pilot, lambda: app.query_one(RunDetail).overlaid == ["wrn-live-a006"], what="unmark")


@pytest.mark.slow
async def test_detail_tabs_and_status(family_home):
    app = console(family_home)
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot, app, 6)
        await pilot.press("down")  # the failed run: its error is shown
        await settle(pilot, lambda: "non-finite loss" in str(app.query_one("#status-text").content), what="error")
        shown = str(app.query_one("#status-text").content)
        assert "0123456789ab (dirty)" in shown and "lowrank run presets/wrn.yaml" in shown  # provenance
        assert "NVIDIA H200" in shown and "fedcba987654" in shown
        await pilot.press("t")
        assert app.query_one("#detail-tabs").active == "tab-config"
        assert "resnet9" in str(app.query_one("#config-text").content)
        await pilot.press("t")
        assert "epoch 3/10" in str(app.query_one("#log-text").content)


@pytest.mark.subprocess
async def test_kill_confirms_and_stops_the_worker(home, sleeper):
    proc = sleeper("20240301-120100-wrn-live-a002")
    make_run(home, "20240301-120000-wrn-done-a001")
    make_run(home, "20240301-120100-wrn-live-a002", state="running", epoch=2, proc=proc, host=HOST)
    app = console(home)
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot, app, 2)
        await pilot.press("x")
        await settle(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="confirmation")
        await pilot.press("n")  # cancel: nothing happens
        await settle(pilot, lambda: not isinstance(app.screen, ConfirmScreen), what="cancel")
        assert proc.is_running()
        await pilot.press("x")
        await settle(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="confirmation")
        await pilot.press("y")
        await settle(pilot, lambda: column(app, "state")[0] == "killed", timeout=20, what="killed")
        assert not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE
        await pilot.press("x")  # now there is nothing to kill
        await settle(pilot, lambda: any("nothing to kill" in text for text, _ in app.notes), what="notification")
        assert not isinstance(app.screen, ConfirmScreen)


async def test_kill_with_empty_table_notifies(home):
    app = console(home)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause(0.3)
        await pilot.press("x", "r", "l", "c")
        assert len(app.screen_stack) == 1
        assert sum("nothing selected" in text or "no run selected" in text for text, _ in app.notes) == 4


@pytest.mark.slow
@pytest.mark.subprocess
async def test_relaunch_new_run_and_resume(home, fake):  # fake: a stand-in worker that finishes in a second
    make_run(home, "20240301-120000-wrn-done-a001", epochs=2)
    killed = make_run(home, "20240301-120100-wrn-stop-a002", state="killed", epochs=2, epoch=1)
    killed.file("checkpoint.pt").write_bytes(b"stand-in checkpoint")
    app = console(home)
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot, app, 2)
        await pilot.press("r")  # highlighted: the killed run -> resume it in place
        assert isinstance(app.screen, RelaunchScreen)
        app.screen.query_one(Select).value = "cpu"
        await pilot.press("r")
        await settle(pilot, lambda: killed.read_status().get("attempt") == 1 and killed.read_status()["state"]
                     == "finished", timeout=20, what="resumed run finished")
        assert killed.read_status()["previous_attempts"][0]["state"] == "killed"
        await pilot.press("down", "r")  # the finished run -> a new run from its config
        app.screen.query_one(Select).value = "cpu"
        await pilot.press("n")
        await settle(pilot, lambda: table(app).row_count == 3, timeout=20, what="new run")
        new = [r for r in app.records.values() if r.status.get("relaunched_from")]
        assert new[0].status["relaunched_from"] == "20240301-120000-wrn-done-a001"
        assert any("relaunched as" in text for text, _ in app.notes)


async def test_log_screen_follows_appended_lines(family_home):
    app = console(family_home)
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot, app, 6)
        await pilot.press("l")
        assert isinstance(app.screen, LogScreen)
        log = app.screen.query_one("Log")
        await settle(pilot, lambda: "epoch 4/10" in "\n".join(log.lines), what="log read")
        with open(family_home / "runs" / "20240301-120500-wrn-live-a006" / "output.log", "a") as handle:
            handle.write("epoch 5/10 train loss 0.1234\n")
        await settle(pilot, lambda: "epoch 5/10 train loss 0.1234" in log.lines, what="followed line")
        await pilot.press("n")  # run actions belong to the main screen
        assert isinstance(app.screen, LogScreen)
        await pilot.press("escape")
        assert not isinstance(app.screen, LogScreen)


@pytest.mark.subprocess
async def test_compare_screen_shows_the_family(family_home):
    app = console(family_home)
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot, app, 6)
        await pilot.press("c")  # highlighted: the running WRN run; its family: 4 finished runs and itself
        assert isinstance(app.screen, CompareScreen)
        compare = app.screen.query_one(DataTable)
        assert compare.row_count == 5
        methods = [str(compare.get_cell_at((row, 2))) for row in range(5)]
        assert methods == ["cp", "separable", "separable", "tt", "tt"]
        assert str(compare.get_cell_at((0, 1))) == "running"
        assert "wrn on cifar10" in app.screen.label
        await pilot.press("escape", "down", "c")  # the resnet9 run: no finished sibling
        assert not isinstance(app.screen, CompareScreen)
        assert any("no finished runs in resnet9" in text for text, _ in app.notes)


@pytest.mark.subprocess
async def test_help_and_quit_leave_runs_going(home, sleeper):
    proc = sleeper("20240301-120100-wrn-live-a002")
    make_run(home, "20240301-120100-wrn-live-a002", state="running", epoch=2, proc=proc, host=HOST)
    app = console(home)
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot, app, 1)
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("escape")
        assert not isinstance(app.screen, HelpScreen)
        await pilot.press("q")
        await pilot.pause()
    assert app.return_code == 0
    assert proc.is_running() and RunDir(home / "runs" / "20240301-120100-wrn-live-a002").read_status()["state"] == "running"


def hits(app) -> int:
    from textual.command import CommandList

    lists = app.screen.query(CommandList)
    return lists.first().option_count if lists else -1


@pytest.mark.slow
async def test_command_palette_runs_actions(family_home):
    app = console(family_home)
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot, app, 6)
        await pilot.press("ctrl+p", *"compare the selected")
        await settle(pilot, lambda: hits(app) == 1, what="one palette hit")
        await pilot.press("enter")
        await settle(pilot, lambda: isinstance(app.screen, CompareScreen), what="compare via palette")
        await pilot.press("escape", "ctrl+p", *"help: the")
        await settle(pilot, lambda: hits(app) == 1, what="one palette hit")
        await pilot.press("enter")
        await settle(pilot, lambda: isinstance(app.screen, HelpScreen), what="help via palette")
