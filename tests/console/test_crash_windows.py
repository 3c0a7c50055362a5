"""Crash windows, injected deterministically (LOWRANK_FAULT): a worker SIGKILLed at a named
point loses no results row and writes none twice; a run killed between checkpoints resumes."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lowrank.config import load
from lowrank.rundir import RunDir

REPO = Path(__file__).resolve().parents[2]
TINY = ["model.name=tiny_convnet", "model.kwargs.width=8", "data.name=synthetic", "data.batch_size=16",
        "data.workers=0", "substitute.method=dense",
        "data.kwargs={num_classes: 4, channels: 1, image_size: 8, num_train: 32, num_val: 16, num_test: 16}",
        "train.device=cpu", "train.epochs=1"]


def make_run(home: Path, overrides=()) -> RunDir:
    return RunDir.create(load(REPO / "presets" / "quickstart.yaml", TINY + list(overrides)).to_dict(), home=home)


def run_worker(run: RunDir, fault: str | None, *args: str) -> int:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    if fault:
        env["LOWRANK_FAULT"] = fault
    with open(run.file("output.log"), "ab") as log:
        return subprocess.run([sys.executable, "-m", "lowrank.train", str(run.path), *args], env=env, stdout=log,
                              stderr=subprocess.STDOUT, cwd=REPO, timeout=300).returncode


def rows_of(home: Path, run_id: str) -> list[dict]:
    path = home / "results.csv"
    if not path.exists():
        return []
    with open(path, newline="") as handle:
        return [row for row in csv.DictReader(handle) if row["run_id"] == run_id]


def lowrank_ls(home: Path) -> None:
    from console.cli import app

    result = CliRunner().invoke(app, ["ls"], env={"LOWRANK_HOME": str(home)})
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("fault", ["worker-finished", "worker-result-appended"])
@pytest.mark.slow
@pytest.mark.subprocess
def test_a_worker_killed_around_the_results_append_loses_no_row_and_writes_none_twice(home, fault):
    run = make_run(home)
    assert run_worker(run, fault) == -signal.SIGKILL
    status = run.read_status()
    assert status["state"] == "finished" and status["results_written"] is False
    assert len(rows_of(home, run.run_id)) == (0 if fault == "worker-finished" else 1)
    lowrank_ls(home)  # any reader repairs the owed row
    lowrank_ls(home)
    rows = rows_of(home, run.run_id)
    assert len(rows) == 1
    assert float(rows[0]["test_err1"]) == status["test_err1"] and rows[0]["state"] == "finished"
    assert run.read_status()["results_written"] is True


@pytest.mark.slow
@pytest.mark.subprocess
def test_an_uninterrupted_worker_writes_its_row_once(home):
    run = make_run(home)
    assert run_worker(run, None) == 0
    lowrank_ls(home)
    assert len(rows_of(home, run.run_id)) == 1 and run.read_status()["results_written"] is True


@pytest.mark.slow
@pytest.mark.subprocess
def test_a_fault_point_not_named_does_nothing(home):
    run = make_run(home)
    assert run_worker(run, "some-other-point") == 0


@pytest.mark.slow
@pytest.mark.subprocess
def test_a_worker_killed_right_after_its_stop_checkpoint_still_resumes_exactly(home):
    """SIGTERM mid-epoch; the worker writes its stop checkpoint and is SIGKILLed before it can
    record `killed` (LOWRANK_FAULT=worker-stop-checkpoint). The checkpoint is durable before any
    state claims it: ls marks the run ended, and --resume finishes it as if never stopped."""
    import time

    from console.runs import RunStore, relaunch
    from lowrank.train import main

    overrides = ["train.epochs=3", "log.checkpoint_every=100", "log.step_every=1",
                 "data.kwargs={num_classes: 4, channels: 1, image_size: 8, num_train: 256, num_val: 16, "
                 "num_test: 16}"]
    reference = make_run(home, overrides)
    assert main([str(reference.path)]) == 0
    run = make_run(home, overrides)
    env = dict(os.environ, PYTHONPATH=str(REPO), LOWRANK_FAULT="worker-stop-checkpoint")
    with open(run.file("output.log"), "ab") as log:
        worker = subprocess.Popen([sys.executable, "-m", "lowrank.train", str(run.path)], env=env, stdout=log,
                                  stderr=subprocess.STDOUT, cwd=REPO)
    deadline = time.monotonic() + 120
    while not any(r.get("event") == "step" and r.get("epoch") == 2 for r in run.read_metrics()):
        assert worker.poll() is None and time.monotonic() < deadline, "the worker never reached epoch 2"
        time.sleep(0.02)
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(60) == -signal.SIGKILL  # died at the fault point, after the checkpoint
    assert run.read_status()["state"] == "running"  # nothing recorded the end
    assert {item.run_id: item for item in RunStore(home).list()}[run.run_id].state == "failed"
    relaunch(run, resume=True)
    assert main([str(run.path), "--resume"]) == 0
    def final(r: RunDir) -> tuple:
        test = [m for m in r.read_metrics() if m.get("event") == "test"][-1]
        return test["loss"], test["err1"], r.read_status()["best_val_err1"]

    assert final(run) == final(reference)
