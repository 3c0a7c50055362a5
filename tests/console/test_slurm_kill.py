"""``lowrank kill`` of a running Slurm run cancels its job: the job leaves squeue, Slurm's
accounting says CANCELLED, the run ends ``killed`` and its worker process is gone."""

from __future__ import annotations

import json
import time

import psutil
import pytest

from slurm_helpers import cli, in_squeue, sacct_states, status, wait_state, write_preset


@pytest.mark.slurm
def test_kill_cancels_the_job(home, tmp_path, slurm_home):
    env = slurm_home
    preset = write_preset(tmp_path, epochs=500, num_train=1024, name="killme")  # minutes: it must be killed
    done = cli("run", str(preset), "--detach", "--json", env=env)
    assert done.returncode == 0, done.stderr
    run_id = json.loads(done.stdout)["run_id"]
    row = wait_state(env, run_id, ("running",), timeout=120)
    job = row["slurm_job_id"]
    deadline = time.monotonic() + 60
    metrics = home / "runs" / run_id / "metrics.jsonl"
    while not status(home, run_id).get("pid") or not metrics.exists() or '"event": "step"' not in metrics.read_text(
            errors="replace"):
        assert time.monotonic() < deadline, "the worker never trained"
        time.sleep(0.5)
    pid = status(home, run_id)["pid"]
    assert in_squeue(job)

    killed = cli("kill", run_id, "--json", env=env)
    assert killed.returncode == 0, killed.stdout + killed.stderr
    [report] = json.loads(killed.stdout)
    assert report["state_before"] == "running" and report["state"] == "killed", report
    assert not in_squeue(job)
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    [row] = [row for row in json.loads(cli("ls", "--json", env=env).stdout) if row["run_id"] == run_id]
    assert row["state"] == "killed" and row["slurm_state"] == "CANCELLED"
    assert "CANCELLED" in sacct_states(job)


@pytest.mark.slurm
def test_kill_of_a_pending_job(home, tmp_path, slurm_home):
    """A job Slurm cannot start yet (held) is cancelled too, and never runs."""
    env = slurm_home
    preset = write_preset(tmp_path, epochs=1, slurm={"extra": {"hold": True}}, name="held")
    done = cli("run", str(preset), "--detach", "--json", env=env)
    assert done.returncode == 0, done.stderr
    run_id = json.loads(done.stdout)["run_id"]
    row = wait_state(env, run_id, ("queued",), timeout=30)
    assert row["slurm_state"] == "PENDING" and in_squeue(row["slurm_job_id"])
    killed = cli("kill", run_id, "--json", env=env)
    assert killed.returncode == 0 and json.loads(killed.stdout)[0]["state"] == "killed"
    assert not in_squeue(row["slurm_job_id"])
    assert status(home, run_id)["state"] == "killed" and not (home / "runs" / run_id / "metrics.jsonl").exists()
