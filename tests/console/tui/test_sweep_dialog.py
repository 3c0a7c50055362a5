"""``C``: a sweep launched from the console's dialog -- methods picked from the registry, a
dry-run plan that shows the unreachable budget with its range, then real runs followed live
in the compare view to their Pareto front."""

from __future__ import annotations

import psutil
import pytest
from textual.widgets import Checkbox, Input, SelectionList

from console.tui.compare_screen import CompareScreen
from console.tui.sweep_actions import SweepRequest
from console.tui.sweep_screen import SweepScreen
from lowrank.errors import UserError
from lowrank.rundir import RunDir
from test_launch_real import console
from tui_helpers import settle

TINY = """\
name: sweep-tiny
model:
  name: tiny_convnet
  kwargs:
    width: 8
data:
  name: synthetic
  batch_size: 32
  kwargs: {num_train: 128, num_val: 64, num_test: 64, image_size: 8}
train:
  epochs: 2
  device: cpu
"""


@pytest.fixture
def presets(tmp_path, monkeypatch, home):
    folder = tmp_path / "presets"
    folder.mkdir()
    (folder / "tiny.yaml").write_text(TINY)
    monkeypatch.setenv("LOWRANK_PRESETS", str(folder))
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.yaml").write_text("cpu_slots: 2\n")  # both runs at once
    return folder


def test_request_is_the_cli_arguments(tmp_path):
    request = SweepRequest(tmp_path / "p.yaml", ("generic", "tt"), "0.1, 0.2", 2, ("train.weight_decay=1e-4,5e-4",),
                           "train.epochs=3", "queue-cpu", True)
    assert request.arguments() == ["compare", "run", str(tmp_path / "p.yaml"), "--methods", "generic,tt", "--seeds",
                                   "2", "--budgets", "0.1,0.2", "--set", "train.epochs=3", "--grid",
                                   "train.weight_decay=1e-4,5e-4", "--cpu", "--skip-unreachable"]
    assert SweepRequest(tmp_path / "p.yaml", ("tt",), placement="slurm").arguments()[-2:] == ["--backend", "slurm"]
    for bad in (SweepRequest(tmp_path / "p.yaml", ()), SweepRequest(tmp_path / "p.yaml", ("tt",), grid=("wd",)),
                SweepRequest(tmp_path / "p.yaml", ("tt",), overrides="epochs")):
        with pytest.raises(UserError):
            bad.arguments()


@pytest.mark.slow
@pytest.mark.subprocess
async def test_sweep_from_the_dialog_runs_to_its_live_pareto_view(home, presets):
    app = console(home)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("C")
        await settle(pilot, lambda: isinstance(app.screen, SweepScreen) and app.screen.is_mounted, timeout=60, what="sweep dialog")
        dialog = app.screen
        await pilot.pause(0.3)  # composed and drawn, as a user sees it before typing
        methods = dialog.query_one(SelectionList)
        names = [methods.get_option_at_index(i).value for i in range(methods.option_count)]
        assert {"separable", "generic", "tt"} <= set(names)  # the registry's methods
        methods.select("separable")
        methods.select("generic")
        dialog.query_one("#budgets", Input).value = "0.3,0.001"
        dialog.action_launch()  # nothing previewed yet: the plan first, nothing starts
        await settle(pilot, lambda: dialog.answer is not None, timeout=180, what="the plan")
        plan = dialog.answer.text
        assert dialog.answer.ok and "unreachable" in plan and "reaches" in plan and "reference" in plan, plan
        assert not (home / "runs").exists() or not list((home / "runs").iterdir())
        assert isinstance(app.screen, SweepScreen)

        dialog.query_one("#skip", Checkbox).value = True
        dialog.answer = None
        dialog.action_launch()  # changed fields: previewed again before it may start
        await settle(pilot, lambda: dialog.answer is not None, timeout=180, what="the second plan")
        assert isinstance(app.screen, SweepScreen)
        dialog.action_launch()
        await settle(pilot, lambda: isinstance(app.screen, CompareScreen), timeout=180, what="the live compare view")
        view = app.screen
        assert view.label.startswith("sweep sweep-")
        runs = [RunDir(path) for path in (home / "runs").iterdir()]
        assert len(runs) == 2  # separable (reference) and generic @ 0.3; generic @ 0.001 skipped
        await settle(pilot, lambda: len(view.runs) == 2 and all(r.info.state == "finished" for r in view.runs),
                     timeout=300, what="both runs finished in the compare view")
        await settle(pilot, lambda: set(view.points) == {"separable", "generic"} and view.front, timeout=10,
                     what="the Pareto front")
        assert all(not running for pts in view.points.values() for *_, running in pts)
        assert "finished" in str(view.query_one("#compare-title").render())

    def gone(pid) -> bool:
        return pid is None or not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE

    import time

    deadline = time.monotonic() + 60  # the finished workers exit (no process left behind)
    while not all(gone(run.read_status().get("pid")) for run in runs) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert all(gone(run.read_status().get("pid")) for run in runs)
