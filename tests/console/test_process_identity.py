"""Which process is a run's worker: boot-relative start ticks (a wall-clock step changes
nothing), this run's id in its environment or command line (a planted status.json never
makes kill signal a bystander), a launcher that died before recording its worker (the
worker is adopted, never doubled), and a queue whose scheduler died (ls restarts one)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from typer.testing import CliRunner

from lowrank.rundir import RunDir, now_iso

from console.launch import kill_run, start_worker, worker_process
from console.runs import RunStore, identity_fields, start_ticks
from console.scheduler import scheduler_running, submit
from fake_worker import fake_config, gone, wait_for
from process_helpers import marked_processes as carriers

REPO = Path(__file__).resolve().parents[2]


def test_start_ticks_are_proc_stat_field_22():
    with open(f"/proc/{os.getpid()}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    assert start_ticks(os.getpid()) == int(fields[19])  # field 22 counted from "pid (comm)"


@pytest.mark.parametrize("step", [-100.0, 100.0], ids=["clock-back", "clock-forward"])
@pytest.mark.subprocess
def test_a_clock_step_marks_no_live_run_dead(fake, step):
    """After the clock jumped, psutil's create_time no longer matches the recorded one (faked
    here by moving the record +-100 s): the live worker is still found, listed running and
    killed gracefully (before: 'worker disappeared', and kill went straight to SIGKILL)."""
    run = RunDir.create(fake_config(epochs=500, step_seconds=0.05), home=fake)
    pid = start_worker(run, gpus=[])
    wait_for(lambda: (run.read_status().get("epoch") or 0) >= 1, what="training")
    recorded = run.read_status()
    assert recorded["start_ticks"] == start_ticks(pid)
    run.update_status(create_time=recorded["create_time"] + step)
    assert worker_process(run.read_status()).pid == pid
    info = {item.run_id: item for item in RunStore(fake).list()}[run.run_id]
    assert info.state == "running"
    report = kill_run(run, grace=10)
    assert pid in report.exited and report.sigkilled == [] and report.state == "killed"


@pytest.mark.subprocess
def test_a_run_is_not_dead_while_a_process_carrying_its_id_lives(fake):
    """No usable identity recorded at all (an old status), but a process of the run lives."""
    run = RunDir.create(fake_config(epochs=500, step_seconds=0.05), home=fake)
    pid = start_worker(run, gpus=[])
    wait_for(lambda: (run.read_status().get("epoch") or 0) >= 1, what="training")
    run.update_status(pid=999_999_999, start_ticks=None, create_time=None)
    try:
        assert {item.run_id: item for item in RunStore(fake).list()}[run.run_id].state == "running"
    finally:
        run.update_status(pid=pid, **identity_fields(pid))
        kill_run(run, grace=5)
    assert gone(pid)


@pytest.mark.subprocess
def test_a_planted_status_never_gets_a_bystander_signalled(fake):
    """status.json names a live process that is not ours, with its exact start time."""
    bystander = subprocess.Popen(["sleep", "60"])
    try:
        run = RunDir.create(fake_config(), home=fake)
        run.update_status(state="running", pid=bystander.pid, pgid=bystander.pid, sid=bystander.pid,
                          **identity_fields(bystander.pid))
        assert worker_process(run.read_status()) is None
        report = kill_run(run, grace=0.5)
        assert bystander.poll() is None and report.pids == []
    finally:
        bystander.kill()
        bystander.wait()


@pytest.mark.slow
@pytest.mark.subprocess
def test_a_launcher_killed_before_recording_its_worker_leaves_one_worker(fake, monkeypatch):
    """The launcher SIGKILLed between starting the worker and recording it (LOWRANK_FAULT);
    the next start adopts the orphaned worker instead of starting a second on the same run."""
    run = RunDir.create(fake_config(epochs=60, step_seconds=0.05), home=fake)
    code = ("import sys; from lowrank.rundir import RunDir; from console.launch import start_worker; "
            "start_worker(RunDir(sys.argv[1]), gpus=[])")
    env = dict(os.environ, LOWRANK_FAULT="launcher-started-worker", PYTHONPATH=str(REPO))
    launcher = subprocess.run([sys.executable, "-c", code, str(run.path)], env=env, cwd=REPO, timeout=60)
    assert launcher.returncode == -9
    # nothing recorded by the launcher (its worker, still running, may already have written state running)
    recorded = run.read_status()
    assert not recorded.get("attempt") and "launched" not in recorded and "command" not in recorded, recorded
    orphan = wait_for(lambda: carriers(run.run_id), what="the orphaned worker")
    # the worker records itself (state running, its pid): a live worker no launcher recorded is
    # adopted, not refused as "already running" (CI saw that refusal when the worker was first)
    wait_for(lambda: run.read_status().get("pid"), what="the orphan to record itself")
    try:
        pid = start_worker(run, gpus=[])  # what a restarted scheduler does
        assert [pid] == orphan == carriers(run.run_id)
        status = run.read_status()
        assert status["state"] == "running" and status["pid"] == pid and status["adopted"]
        final = wait_for(lambda: run.read_status() if run.read_status()["state"] != "running" else None, 60,
                         what="the adopted worker to finish")
        assert final["state"] == "finished"
    finally:
        for left in carriers(run.run_id):
            psutil.Process(left).kill()


@pytest.mark.subprocess
def test_ls_restarts_the_scheduler_of_an_orphaned_queue(fake):
    """A queued run whose scheduler was killed: ls says so, starts one, and the run runs."""
    from console.cli import app

    run = RunDir.create(fake_config(epochs=2, step_seconds=0.01), home=fake)
    run.update_status(submitted=now_iso())  # queued as `run --detach` queues it, then its scheduler died
    assert run.read_status()["state"] == "queued" and not scheduler_running(fake)
    result = CliRunner().invoke(app, ["ls", "--json"])
    assert result.exit_code == 0
    assert json.loads(result.stdout)[0]["run_id"] == run.run_id  # stdout stays valid JSON
    assert "the queue had no scheduler" in result.stderr
    final = wait_for(lambda: run.read_status() if run.read_status()["state"] in ("finished", "failed") else None,
                     60, what="the revived queue to run it")
    assert final["state"] == "finished", final
    again = CliRunner().invoke(app, ["ls"])
    assert "no scheduler" not in again.stderr


def test_ls_leaves_a_run_nobody_queued_alone(fake):
    """A queued run never submitted (its foreground `lowrank run` died before starting it)."""
    from console.cli import app

    RunDir.create(fake_config(epochs=2, step_seconds=0.01), home=fake)
    result = CliRunner().invoke(app, ["ls"])
    assert result.exit_code == 0 and "no scheduler" not in result.stderr and not scheduler_running(fake)
