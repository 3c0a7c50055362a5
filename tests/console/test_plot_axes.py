"""``lowrank plot``: any logged metric, the x axis as epoch, step or training time summed over
resumes; and a resumed run's elapsed time that carries on from its earlier attempts."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from lowrank.errors import UserError
from lowrank.rundir import RunDir

from console.cli import app
from console.plotting import available_metrics, curves, positions
from console.runs import RunStore, relaunch

# two attempts: epochs 1-2 from t=100, then a resume 1000 s later that redoes epoch 2 and does 3
RECORDS = [
    {"event": "start", "epoch": 0, "time": 100.0},
    {"event": "step", "epoch": 1, "step": 2, "batch": 2, "batches": 4, "loss": 2.0, "lr": 0.1, "time": 101.0},
    {"event": "step", "epoch": 1, "step": 4, "batch": 4, "batches": 4, "loss": 1.5, "lr": 0.1, "time": 102.0},
    {"event": "epoch", "epoch": 1, "split": "train", "loss": 1.7, "throughput": 900.0, "seconds": 2.0, "time": 102.0},
    {"event": "eval", "epoch": 1, "split": "val", "loss": 1.6, "err1": 40.0, "time": 103.0},
    {"event": "step", "epoch": 2, "step": 6, "batch": 2, "batches": 4, "loss": 1.2, "lr": 0.05, "time": 110.0},
    {"event": "start", "epoch": 1, "resumed": True, "time": 1110.0},
    {"event": "step", "epoch": 2, "step": 6, "batch": 2, "batches": 4, "loss": 1.2, "lr": 0.05, "time": 1111.0},
    {"event": "step", "epoch": 2, "step": 8, "batch": 4, "batches": 4, "loss": 1.0, "lr": 0.05, "time": 1112.0},
    {"event": "eval", "epoch": 2, "split": "val", "loss": 1.1, "err1": 30.0, "time": 1113.0},
]


def test_any_logged_number_is_a_metric():
    assert {"loss", "lr", "err1", "throughput"} <= available_metrics(RECORDS)
    assert not {"time", "step", "batch", "seconds", "epoch"} & available_metrics(RECORDS)
    assert curves(RECORDS, "lr")["train"] == ([0.5, 1.0, 1.5, 2.0], [0.1, 0.1, 0.05, 0.05])


def test_step_axis_places_evals_at_their_epochs_last_step():
    val = curves(RECORDS, "err1", x="step")["val"]
    assert val == ([4.0, 8.0], [40.0, 30.0])
    assert curves(RECORDS, "loss", x="step")["train"] == ([2.0, 4.0, 6.0, 8.0], [2.0, 1.5, 1.2, 1.0])


def test_time_axis_sums_the_attempts_and_skips_the_gap():
    placed = {(r["event"], r["time"]): where for r, where in positions(RECORDS, "time")}
    assert placed[("step", 101.0)] == 1.0
    assert placed[("step", 110.0)] == 10.0  # the first attempt ends 10 s in
    assert placed[("start", 1110.0)] == 10.0  # the resume carries on there, not 1010 s later
    assert placed[("eval", 1113.0)] == 13.0


def _run_with_metrics(home) -> RunDir:
    run = RunDir.create({"name": "axes", "train": {"epochs": 3}}, home=home)
    for record in RECORDS:
        run.append_metric(dict(record))
    return run


def test_plot_command_takes_metric_and_x(home):
    _run_with_metrics(home)
    runner = CliRunner()
    shown = runner.invoke(app, ["plot", "last", "-m", "lr", "--x", "time", "--no-color", "--width", "80"])
    assert shown.exit_code == 0, shown.output
    assert "training time" in shown.output
    refused = runner.invoke(app, ["plot", "last", "-m", "sparsity"])
    assert isinstance(refused.exception, UserError)  # main() prints it on one line, exit 2
    assert "not in these runs' metrics" in str(refused.exception) and "lr, throughput" in str(refused.exception)
    bad_axis = runner.invoke(app, ["plot", "last", "--x", "wall"])
    assert isinstance(bad_axis.exception, UserError) and "unknown x axis" in str(bad_axis.exception)


def test_elapsed_carries_on_across_a_resume(home):
    """Before, a resumed run's elapsed restarted at 0 (only the latest attempt counted)."""
    run = _run_with_metrics(home)
    run.file("checkpoint.pt").write_bytes(b"stand-in")  # relaunch --resume needs one to exist
    run.update_status(state="killed", started="2024-01-01T00:00:00+00:00", ended="2024-01-01T00:10:00+00:00",
                      epoch=1)
    relaunch(run, resume=True)
    assert run.read_status()["elapsed_before"] == pytest.approx(600.0)
    run.update_status(state="finished", started="2024-01-01T01:00:00+00:00", ended="2024-01-01T01:05:00+00:00",
                      exit_code=0)
    info = {item.run_id: item for item in RunStore(home).list()}[run.run_id]
    assert info.elapsed_s == pytest.approx(900.0)  # 10 min + 5 min, not the 5 min of the last attempt
