"""``T``: the console lists studies and their trials (pruned ones labelled) without optuna."""

from __future__ import annotations

import pytest

import subprocess
import sys

from textual.widgets import DataTable

from console.tui.app import LowrankConsole
from console.tui.studies_screen import StudiesScreen
from console.tune.study import write_manifest
from tui_helpers import NOW, fake_snapshot, make_run, settle


def make_study(home):
    make_run(home, "20240301-120000-wd-t0-a001", err=6.0, extra={"study": "wd", "trial": 0})
    make_run(home, "20240301-120100-wd-t1-a002", state="pruned", epoch=3, err=9.0,
             extra={"study": "wd", "trial": 1, "ended": "2024-03-01T12:05:00+00:00"})
    write_manifest({"study": "wd", "created": "2024-03-01T12:00:00+00:00", "preset": "presets/quickstart.yaml",
                    "storage": f"journal:{home}/studies/wd.journal",
                    "space": [{"key": "train.lr", "spec": "log:0.001:0.3"}], "metric": "best_val_err1",
                    "pruner": {"name": "hyperband"}, "trials_requested": 3,
                    "trials": {"0": {"run_id": "20240301-120000-wd-t0-a001", "params": {"train.lr": 0.05}},
                               "1": {"run_id": "20240301-120100-wd-t1-a002", "params": {"train.lr": 0.2}},
                               "2": {"run_id": None, "params": {"train.lr": 0.001}, "error": "cannot reach budget"}}},
                   home)


async def test_studies_screen_lists_studies_and_trials(home):
    make_study(home)
    app = LowrankConsole(home, snapshot_fn=fake_snapshot, clock=lambda: NOW, poll_interval=0.1, host_interval=0.2)
    async with app.run_test(size=(160, 45)) as pilot:
        await settle(pilot, lambda: app.runs_table.row_count == 2, what="runs")
        await pilot.press("T")
        await settle(pilot, lambda: isinstance(app.screen, StudiesScreen), what="studies screen")
        studies = app.screen.query_one("#studies", DataTable)
        trials = app.screen.query_one("#trials", DataTable)
        await settle(pilot, lambda: trials.row_count == 3, what="trials")
        assert studies.row_count == 1 and "wd" in str(studies.get_row_at(0)[0])
        assert str(studies.get_row_at(0)[4]) == "3/3"
        states = [str(trials.get_row_at(row)[1]) for row in range(3)]
        assert states == ["finished", "pruned", "failed"]
        assert "train.lr=0.05" in str(trials.get_row_at(0)[4])
        assert "cannot reach budget" in str(trials.get_row_at(2)[5])
        await pilot.press("escape")
        await settle(pilot, lambda: not isinstance(app.screen, StudiesScreen), what="back")


@pytest.mark.subprocess
def test_study_listing_loads_neither_optuna_nor_torch(home):
    make_study(home)
    code = ("import sys; from console.tune.listing import list_studies; "
            f"rows = list_studies({str(home)!r}); "
            "print(len(rows), rows[0]['trials'], 'optuna' in sys.modules, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["1", "3", "False", "False"], out.stdout + out.stderr
