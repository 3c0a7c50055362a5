"""The console survives hand-corrupted run directories: it keeps running and shows each such
run as ``unreadable`` (never hides it); names, errors and log lines never reach the terminal
as escape sequences or markup."""

from __future__ import annotations

import pytest

import json

from console.tui.app import LowrankConsole
from console.tui.log_screen import LogScreen
from console.tui.runs_table import RunsTable
from tui_helpers import NOW, make_run, no_gpu_snapshot, settle

GOOD = "20240301-120000-good-a001"
# run id -> (corruption of its files, shown as unreadable)
CORRUPT = {
    "20240301-120100-slist-b001": ({"status.json": "[1, 2]"}, True),
    "20240301-120200-snull-b002": ({"status.json": "null"}, True),
    "20240301-120300-sbytes-b003": ({"status.json": b"\xff\xfe\x00"}, True),
    "20240301-120400-stypes-b004": ({"status.json": json.dumps({"state": "running", "epoch": "x", "pid": "1",
                                                                "gpus": "0"})}, True),
    "20240301-120500-snan-b005": ({"status.json": '{"state": "finished", "best_val_err1": NaN, "last_loss": Infinity}'},
                                  True),
    "20240301-120600-clist-b006": ({"config.yaml": "- 1\n- 2\n"}, True),
    "20240301-120700-cbin-b007": ({"config.yaml": b"\x00\x01binary"}, True),
    "20240301-120800-cstr-b008": ({"config.yaml": "name: x\nmodel: resnet\ntrain: long\n"}, True),
    "20240301-120900-mbad-b009": ({"metrics.jsonl": b'[1]\n\xff\xfe\n{"event": "step", "epoch": 1, "batch": 1, '
                                                    b'"batches": 2, "loss": NaN, "err1": "x"}\n'}, False),
    "20240301-121000-evil-b010": ({"status.json": json.dumps({"state": "failed", "name": "\x1b]0;pwned\x07[/bold]n",
                                                              "error": "boom [/bold] [$var] \x1b[2J"}),
                                   "output.log": b"\x1b]0;pwned\x07\x1b[31mred [/bold]\n"}, False),
}


def write(run_path, files) -> None:
    for name, content in files.items():
        path = run_path / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)


@pytest.mark.slow
@pytest.mark.subprocess
async def test_console_shows_corrupt_runs_as_unreadable_and_keeps_running(home):
    make_run(home, GOOD)
    for run_id, (files, _) in CORRUPT.items():
        write(make_run(home, run_id).path, files)
    app = LowrankConsole(home, snapshot_fn=no_gpu_snapshot, clock=lambda: NOW, poll_interval=0.1, host_interval=0.2)
    async with app.run_test(size=(220, 60)) as pilot:
        table = app.query_one(RunsTable)
        await settle(pilot, lambda: table.row_count == len(CORRUPT) + 1, timeout=30, what="every run listed")
        states = {run_id: record.info.state for run_id, record in app.records.items()}
        for run_id, (_, unreadable) in CORRUPT.items():
            assert (states[run_id] == "unreadable") == unreadable, (run_id, states[run_id])
            if unreadable:
                assert app.records[run_id].info.error.startswith("unreadable: ")
        shown = [str(table.get_cell_at((row, table.get_column_index("state")))) for row in range(table.row_count)]
        assert shown.count("unreadable") == sum(unreadable for _, unreadable in CORRUPT.values())
        for _ in range(table.row_count):  # highlight every row: the detail pane renders each run
            await pilot.press("down")
            await pilot.pause(0.1)
        for row in range(table.row_count):
            for col in range(len(table.columns)):
                text = str(table.get_cell_at((row, col)))
                assert "\x1b" not in text and "\x07" not in text, text
        await pilot.pause(0.3)
        assert app.is_running
        # the log of the hostile run, escapes shown as text
        app.push_screen(LogScreen(home / "runs" / "20240301-121000-evil-b010" / "output.log", "evil"))
        await settle(pilot, lambda: isinstance(app.screen, LogScreen) and bool(app.screen.query("Log"))
                     and app.screen.query_one("Log").line_count > 0,
                     timeout=20, what="log lines")
        lines = app.screen.query_one("Log").lines
        assert any("\\x1b]0;pwned\\x07" in line for line in lines), lines
        assert not any("\x1b" in line for line in lines)
        await pilot.press("escape")
        await pilot.pause(0.2)
        assert app.is_running
