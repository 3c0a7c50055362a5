"""The run-management commands end to end: ls, kill, relaunch, logs, plot, gpus, scheduler."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lowrank.errors import UserError
from lowrank.rundir import RunDir

from console.cli import app
from console.launch import start_worker
from fake_worker import children_of, fake_config, gone, wait_for

REPO = Path(__file__).resolve().parents[2]
runner = CliRunner()


def cli(*args: str) -> subprocess.CompletedProcess:
    """The real ``lowrank`` entry point in a subprocess (user errors -> exit 2, no traceback)."""
    return subprocess.run([sys.executable, "-c", "from console.cli import main; main()", *args],
                          capture_output=True, text=True, cwd=REPO, timeout=120)


def invoke(*args: str):
    result = runner.invoke(app, list(args), catch_exceptions=True)
    return result


@pytest.mark.subprocess
def test_ls_json_table_and_state_filter(fake):
    done = RunDir.create(fake_config(name="done"), home=fake)
    done.update_status(state="finished", epoch=3, best_val_err1=12.5, last_loss=0.5)
    RunDir.create(fake_config(name="waiting"), home=fake)
    rows = json.loads(invoke("ls", "--json").stdout)
    assert [(row["name"], row["state"]) for row in rows] == [("done", "finished"), ("waiting", "queued")]
    assert json.loads(invoke("ls", "--json", "--state", "queued").stdout)[0]["name"] == "waiting"
    table = invoke("ls").stdout
    assert done.run_id in table and "12.50%" in table and "3/3" in table
    out = cli("ls", "--state", "bogus")
    assert out.returncode == 2 and "unknown state 'bogus'" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.subprocess
def test_unknown_run_prefix_is_a_user_error(fake):
    out = cli("kill", "nothing-like-this")
    assert out.returncode == 2 and "no run matches" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.subprocess
def test_kill_command_stops_the_whole_tree(fake):
    run = RunDir.create(fake_config(name="victim", epochs=1000, sleepers=2, stubborn_child=True), home=fake)
    start_worker(run, gpus=[])
    kids = children_of(run)
    result = invoke("kill", "victim", "--grace", "5", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)[0]
    assert report["state"] == "killed" and report["survivors"] == []
    assert all(gone(pid) for pid in [run.read_status()["pid"], *sum(kids.values(), [])])


@pytest.mark.subprocess
def test_relaunch_detach_and_resume_errors(fake, monkeypatch):
    monkeypatch.setenv("LOWRANK_MAX_CPU_RUNS", "2")
    first = RunDir.create(fake_config(name="again", epochs=1), home=fake)
    first.update_status(state="failed", error="boom")
    result = invoke("relaunch", first.run_id, "--detach", "--json")
    assert result.exit_code == 0, result.output
    new_id = json.loads(result.stdout)["run_id"]
    assert new_id != first.run_id
    new = RunDir(first.path.parent / new_id)
    status = wait_for(lambda: new.read_status() if new.read_status()["state"] == "finished" else None, 30,
                      what="the relaunched run (started by the scheduler)")
    assert status["relaunched_from"] == first.run_id and new.read_config() == first.read_config()
    result = invoke("relaunch", first.run_id, "--resume")
    assert isinstance(result.exception, UserError) and "no checkpoint" in str(result.exception)


@pytest.mark.subprocess
def test_relaunch_foreground_runs_to_the_end(fake):
    first = RunDir.create(fake_config(name="fg", epochs=2), home=fake)
    first.update_status(state="killed")
    result = invoke("relaunch", "fg")
    assert result.exit_code == 0, result.output
    copies = [info for info in json.loads(invoke("ls", "--json").stdout) if info["run_id"] != first.run_id]
    assert len(copies) == 1 and copies[0]["state"] == "finished" and copies[0]["epoch"] == 2


@pytest.mark.subprocess
def test_logs_prints_and_follows_until_the_end(fake):
    run = RunDir.create(fake_config(name="chatty", epochs=3, step_seconds=0.05), home=fake)
    start_worker(run, gpus=[])
    out = cli("logs", "chatty", "-f")  # returns by itself when the run ends
    assert out.returncode == 0 and "launch" in out.stdout
    assert run.read_status()["state"] == "finished"
    run.file("output.log").write_text("line1\nline2\nline3\n")
    assert invoke("logs", "chatty", "--tail", "2").stdout == "line2\nline3\n"


def test_plot_overlays_runs(fake):
    runs = []
    for name, scale in (("small", 1.0), ("large", 0.5)):
        run = RunDir.create(fake_config(name=name), home=fake)
        for epoch in (1, 2, 3):
            for batch in (1, 2):
                run.append_metric({"event": "step", "epoch": epoch, "batch": batch, "batches": 2, "split": "train",
                                   "loss": scale * 2 / (epoch + batch / 2), "err1": scale * 50 / epoch})
            run.append_metric({"event": "eval", "epoch": epoch, "split": "val", "loss": scale / epoch,
                               "err1": scale * 60 / epoch})
        runs.append(run)
    result = invoke("plot", runs[0].run_id, runs[1].run_id, "--no-color", "--width", "90")
    assert result.exit_code == 0, result.output
    text = result.stdout
    assert "loss" in text and "top-1 error" in text
    for name in ("small", "large"):
        assert f"{name} ({runs[0 if name == 'small' else 1].run_id[-4:]}) train" in text
        assert "val" in text
    empty = RunDir.create(fake_config(name="empty"), home=fake)
    result = invoke("plot", empty.run_id)
    assert isinstance(result.exception, UserError) and "nothing to plot" in str(result.exception)


def test_plot_curves_series():
    from console.plotting import curves

    records = [
        {"event": "step", "epoch": 1, "batch": 1, "batches": 4, "split": "train", "loss": 2.0},
        {"event": "step", "epoch": 1, "batch": 4, "batches": 4, "split": "train", "loss": 1.5},
        {"event": "epoch", "epoch": 1, "split": "train", "loss": 1.7},
        {"event": "eval", "epoch": 1, "split": "val", "loss": 1.6},
        {"event": "step", "epoch": 2, "batch": 4, "batches": 4, "split": "train", "loss": 1.4},  # killed here
        {"event": "start", "epoch": 1, "resumed": True},
        {"event": "step", "epoch": 2, "batch": 4, "batches": 4, "split": "train", "loss": 1.3},  # resumed: wins
        {"event": "eval", "epoch": 2, "split": "val", "loss": 1.2},
    ]
    series = curves(records, "loss")
    assert series["train"] == ([0.25, 1.0, 2.0], [2.0, 1.5, 1.3])
    assert series["val"] == ([1.0, 2.0], [1.6, 1.2])
    assert curves([{"event": "epoch", "epoch": 1, "split": "train", "loss": 1.0}])["train"] == ([1.0], [1.0])


@pytest.mark.slow
@pytest.mark.subprocess
def test_gpus_says_no_gpu_and_shows_host_load(home):
    from console.gpus import snapshot

    if snapshot(pid_to_run={}).has_gpus:
        pytest.skip("this host has a GPU")
    out = cli("gpus")
    assert out.returncode == 0
    assert "no GPU" in out.stdout and "NVML" in out.stdout
    assert "load" in out.stdout and "CPU" in out.stdout and "memory" in out.stdout
    data = json.loads(cli("gpus", "--json").stdout)
    assert data["gpu_count"] == 0 and data["gpus"] == [] and data["nvml_error"]
    assert data["host"]["cpu_count"] >= 1 and len(data["host"]["load_avg"]) == 3


@pytest.mark.subprocess
def test_scheduler_status_and_stop(fake, monkeypatch):
    monkeypatch.setenv("LOWRANK_MAX_CPU_RUNS", "1")
    result = invoke("scheduler", "status", "--json")
    assert json.loads(result.stdout)["running"] is False
    run = RunDir.create(fake_config(name="long", epochs=1000), home=fake)
    run.update_status(state="queued", requirement={"gpus": 0})
    blocker = RunDir.create(fake_config(name="blocker", epochs=1000), home=fake)
    # occupy the only CPU slot so "long" stays queued and the scheduler keeps serving
    start_worker(blocker, gpus=[])
    try:
        assert "started" in invoke("scheduler", "start").stdout
        wait_for(lambda: json.loads(invoke("scheduler", "status", "--json").stdout).get("pid"), 10,
                 what="scheduler pid")
        status = json.loads(invoke("scheduler", "status", "--json").stdout)
        assert status["running"] and run.run_id in status["queued_runs"] and blocker.run_id in status["running_runs"]
        assert "scheduler stopped" in invoke("scheduler", "stop").stdout
        assert json.loads(invoke("scheduler", "status", "--json").stdout)["running"] is False
        assert run.read_status()["state"] == "queued"  # stopping the scheduler touches no run
    finally:
        invoke("kill", blocker.run_id, "--grace", "2")


def _only_run(home: Path) -> RunDir:
    runs = sorted((home / "runs").iterdir())
    assert len(runs) == 1
    return RunDir(runs[0])


@pytest.mark.parametrize("detach", [False, True], ids=["foreground", "detach"])
@pytest.mark.slow
@pytest.mark.subprocess
def test_kill_9_of_lowrank_run_leaves_the_run_going(fake, detach):
    """``lowrank run`` (its own process, then for --detach the scheduler it spawned) is
    SIGKILLed mid-run: the worker keeps training, ``lowrank ls`` shows it, it finishes."""
    import os
    import signal as signals

    args = [sys.executable, "-c", "from console.cli import main; main()", "run", "presets/quickstart.yaml",
            "--cpu", "--set", "train.epochs=40"] + (["--detach"] if detach else [])
    launcher = subprocess.Popen(args, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: (fake / "runs").is_dir() and any((fake / "runs").iterdir()), 60, what="the run directory")
        run = _only_run(fake)
        wait_for(lambda: (run.read_status().get("epoch") or 0) >= 2, 60, what="training to start")
        if detach:
            launcher.wait(30)  # --detach returned at once; the launcher is now the scheduler
            from console.scheduler import scheduler_info

            pid = scheduler_info(fake).get("pid")
            if pid:  # else it already exited: its queue was empty once the run started
                os.kill(pid, signals.SIGKILL)
        else:
            launcher.send_signal(signals.SIGKILL)
    finally:
        if launcher.poll() is None:
            launcher.kill()
        launcher.wait()
    listed = json.loads(cli("ls", "--json").stdout)
    assert [(row["run_id"], row["state"]) for row in listed] == [(run.run_id, "running")]
    status = wait_for(lambda: run.read_status() if run.read_status()["state"] != "running" else None, 60,
                      what="the run to finish on its own")
    assert status["state"] == "finished" and status["epoch"] == 40
