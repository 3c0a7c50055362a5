"""Snapshot tests of the console's main screens (pytest-textual-snapshot).

Deterministic: a fixed LOWRANK_HOME path, fixed run timestamps and a fixed clock, and a
fake GPU snapshot instead of NVML. Update after an intended change with
``pytest tests/console/tui/test_snapshots.py --snapshot-update`` and look at the SVGs.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from console.tui.app import LowrankConsole
from tui_helpers import NOW, fake_snapshot, make_run, settle

HOME = Path("/tmp/lowrank-tui-snapshots/home")  # shown in the header: must not vary
PRESETS = Path("/tmp/lowrank-tui-snapshots/presets")
SIZE = (160, 45)


@pytest.fixture
def app(monkeypatch) -> LowrankConsole:
    shutil.rmtree(HOME.parent, ignore_errors=True)
    make_run(HOME, "20240301-120000-wrn-sep-a001", method="separable", err=6.0, params=1_200_000, sweep="s1")
    make_run(HOME, "20240301-120100-wrn-tt-a002", method="tt", err=7.0, params=600_000, sweep="s1")
    make_run(HOME, "20240301-120200-wrn-tt-a003", method="tt", err=6.4, params=900_000, sweep="s1")
    make_run(HOME, "20240301-120300-wrn-cp-a004", method="cp", err=8.0, params=400_000, sweep="s1")
    make_run(HOME, "20240301-120400-resnet-bad-a005", state="failed", model="resnet9", method="hashed", epoch=3)
    make_run(HOME, "20240301-120500-wrn-live-a006", state="running", method="acdc", epoch=4)
    PRESETS.mkdir(parents=True)
    for name in ("quickstart.yaml", "wrn/teacher.yaml", "wrn/student-separable.yaml"):
        (PRESETS / name).parent.mkdir(parents=True, exist_ok=True)
        (PRESETS / name).write_text("name: x\n")
    monkeypatch.setenv("LOWRANK_PRESETS", str(PRESETS))
    return LowrankConsole(HOME, snapshot_fn=fake_snapshot, clock=lambda: NOW, poll_interval=0.1, host_interval=0.2)


async def loaded(pilot) -> None:
    app = pilot.app
    await settle(pilot, lambda: app.runs_table.row_count == 6 and app.run_detail.overlaid
                 and app.snapshot is not None, what="first data")
    await pilot.pause(0.3)


def test_main_screen(app, snap_compare):
    async def before(pilot):
        await loaded(pilot)
        await pilot.press("down", "down")  # a finished run: curves, status
        await settle(pilot, lambda: app.run_detail.overlaid == ["wrn-cp-a004"], what="detail")
        await pilot.pause(0.3)

    assert snap_compare(app, terminal_size=SIZE, run_before=before)


@pytest.mark.slow
def test_overlay_and_filter(app, snap_compare):
    async def before(pilot):
        await loaded(pilot)
        await pilot.press("slash", *"wrn", "enter", "down", "down", "space", "space")
        await settle(pilot, lambda: len(app.run_detail.overlaid) == 2, what="overlay")
        await pilot.pause(0.3)

    assert snap_compare(app, terminal_size=SIZE, run_before=before)


@pytest.mark.subprocess
def test_compare_screen(app, snap_compare):
    async def before(pilot):
        await loaded(pilot)
        await pilot.press("down", "down", "c")
        await pilot.pause(0.3)

    assert snap_compare(app, terminal_size=SIZE, run_before=before)


def test_launch_dialog(app, snap_compare):
    async def before(pilot):
        await loaded(pilot)
        await pilot.press("n")
        await settle(pilot, lambda: len(app.screen_stack) == 2, what="dialog")
        await pilot.pause(0.3)

    assert snap_compare(app, terminal_size=SIZE, run_before=before)


@pytest.mark.slow
def test_help_screen(app, snap_compare):
    async def before(pilot):
        await loaded(pilot)
        await pilot.press("question_mark")
        await pilot.pause(0.3)

    assert snap_compare(app, terminal_size=SIZE, run_before=before)


@pytest.mark.parametrize("size", [(80, 24), (120, 40), (200, 60)], ids=["80x24", "120x40", "200x60"])
def test_main_screen_at_terminal_sizes(app, snap_compare, size):
    """Columns collapse by priority, ids are short, the panels reflow (header and frames go at 24 rows)."""
    async def before(pilot):
        await loaded(pilot)
        await pilot.pause(0.3)

    assert snap_compare(app, terminal_size=size, run_before=before)


@pytest.mark.slow
def test_compare_screen_narrow(app, snap_compare):
    async def before(pilot):
        await loaded(pilot)
        await pilot.press("down", "down", "c")
        await pilot.pause(0.3)

    assert snap_compare(app, terminal_size=(80, 24), run_before=before)
