"""Launch and kill a real tiny training run through the console's keys (``n`` then ``k``)."""

from __future__ import annotations

from pathlib import Path

import psutil
import pytest
from textual.widgets import Input, OptionList, Select

from console.tui.app import LowrankConsole
from console.tui.confirm_screen import ConfirmScreen
from console.tui.launch_screen import LaunchScreen
from lowrank.rundir import RunDir
from tui_helpers import NOW, no_gpu_snapshot, settle

TINY = """\
name: tui-tiny
model:
  name: tiny_convnet
  kwargs:
    width: 8
data:
  name: synthetic
  batch_size: 32
  kwargs: {num_train: 256, num_val: 64, num_test: 64, image_size: 8}
train:
  epochs: 200      # still running when the test kills it
  device: cpu
"""


@pytest.fixture
def presets(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "presets"
    folder.mkdir()
    (folder / "a_bad.yaml").write_text("name: bad\nmodel:\n  name: tiny_convnet\n  colour: blue\n")
    (folder / "tiny.yaml").write_text(TINY)
    monkeypatch.setenv("LOWRANK_PRESETS", str(folder))
    return folder


def console(home) -> LowrankConsole:
    app = LowrankConsole(home, snapshot_fn=no_gpu_snapshot, clock=lambda: NOW, poll_interval=0.2)
    app.notes = []
    original = app.notify
    app.notify = lambda message, **kw: (app.notes.append((str(message), kw.get("severity"))), original(message, **kw))[1]
    return app


async def open_launch(pilot, app, preset_index: int) -> LaunchScreen:
    await pilot.press("n")
    await settle(pilot, lambda: isinstance(app.screen, LaunchScreen), what="launch dialog")
    screen = app.screen
    for _ in range(preset_index):
        await pilot.press("down")
    await pilot.press("enter")  # choose the preset: focus moves to the overrides
    assert isinstance(screen.focused, Input)
    return screen


@pytest.mark.subprocess
async def test_bad_preset_is_a_notification_and_creates_nothing(home, presets):
    app = console(home)
    async with app.run_test(size=(160, 45)) as pilot:
        await open_launch(pilot, app, 0)
        await pilot.press(*"train.epochs=3", "enter")
        await settle(pilot, lambda: any(sev == "error" for _, sev in app.notes), timeout=60, what="error note")
        text = next(text for text, sev in app.notes if sev == "error")
        assert "a_bad.yaml" in text and "model.colour" in text
        assert not (home / "runs").exists() or not list((home / "runs").iterdir())
        assert len(app.screen_stack) == 1


@pytest.mark.slow
@pytest.mark.subprocess
async def test_launch_and_kill_a_real_run(home, presets):
    app = console(home)
    async with app.run_test(size=(160, 45)) as pilot:
        screen = await open_launch(pilot, app, 1)
        assert str(screen.query_one(OptionList).get_option_at_index(1).prompt) == "tiny.yaml"
        await pilot.press("tab", "enter", "down", "down", "enter")  # where: "start now on the CPU"
        assert screen.query_one(Select).value == "cpu"
        await pilot.press("tab", "enter")  # the Launch button
        await settle(pilot, lambda: app.runs_table.row_count == 1, timeout=60, what="the new run in the table")
        run = RunDir(next((home / "runs").iterdir()))
        await settle(pilot, lambda: run.read_status().get("state") == "running" and (run.path / "metrics.jsonl").exists(),
                     timeout=90, what="the worker training")
        pid = run.read_status()["pid"]
        worker = psutil.Process(pid)
        assert "lowrank.train" in " ".join(worker.cmdline())
        await settle(pilot, lambda: app.runs_table.highlighted == run.run_id and str(
            app.runs_table.get_cell_at((0, 6))) == "running", what="running row")
        await pilot.press("x")
        await settle(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="confirmation")
        await pilot.press("y")
        # the kill worker reports when every process of the run is gone
        await settle(pilot, lambda: any(text.startswith(f"{run.run_id}: killed") for text, _ in app.notes),
                     timeout=30, what="kill report")
        assert run.read_status()["state"] == "killed"
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
        await settle(pilot, lambda: str(app.runs_table.get_cell_at((0, 6))) == "killed", what="killed row")


@pytest.mark.slow
@pytest.mark.subprocess
async def test_launch_dialog_runs_the_up_front_checks(home, presets):
    """A check the worker used to make only after its run existed (CUDA here) refuses the launch
    in the dialog, through the precheck subprocess: an error note and no run directory."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("this host has CUDA")
    app = console(home)
    async with app.run_test(size=(160, 45)) as pilot:
        await open_launch(pilot, app, 1)
        await pilot.press(*"train.device=cuda", "enter")
        await settle(pilot, lambda: any(sev == "error" for _, sev in app.notes), timeout=120, what="error note")
        text = next(text for text, sev in app.notes if sev == "error")
        assert "train.device" in text and "CUDA" in text
        assert not (home / "runs").exists() or not list((home / "runs").iterdir())
        assert len(app.screen_stack) == 1
