"""``lowrank kill`` of a running Slurm run cancels its job: the job leaves squeue, Slurm's
accounting says CANCELLED, the run ends ``killed`` and its worker process is gone."""

from __future__ import annotations

import json
import time

import psutil
import pytest

from slurm_helpers import cli, in_squeue, sacct_states, status, wait_state, write_preset


@pytest.mark.slurm
@pytest.mark.slow
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
@pytest.mark.slow
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


@pytest.mark.slurm
@pytest.mark.slow
def test_relaunch_resume_of_a_killed_slurm_run(home, tmp_path, slurm_home):
    """``relaunch --resume`` of a killed Slurm run submits a new job that continues from the
    checkpoint; the killed attempt is in the run's history."""
    env = slurm_home
    preset = write_preset(tmp_path, epochs=30, num_train=1024, name="again")
    done = cli("run", str(preset), "--detach", "--json", env=env)
    assert done.returncode == 0, done.stderr
    run_id = json.loads(done.stdout)["run_id"]
    metrics = home / "runs" / run_id / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while not metrics.exists() or metrics.read_text(errors="replace").count('"event": "epoch"') < 2:
        assert time.monotonic() < deadline, "the run never got past epoch 2"
        time.sleep(0.2)
    first_job = status(home, run_id)["slurm_job_id"]
    assert cli("kill", run_id, env=env).returncode == 0
    assert status(home, run_id)["state"] == "killed" and not in_squeue(first_job)

    again = cli("relaunch", run_id, "--resume", "--detach", env=env)
    assert again.returncode == 0, again.stderr
    assert wait_state(env, run_id, ("finished", "failed", "killed"), timeout=180)["state"] == "finished"
    recorded = status(home, run_id)
    assert recorded["slurm_job_id"] != first_job and recorded["epoch"] == 30
    assert [attempt["state"] for attempt in recorded["previous_attempts"]] == ["killed"]
    starts = [json.loads(line) for line in metrics.read_text().splitlines() if '"event": "start"' in line]
    assert [start["resumed"] for start in starts] == [False, True] and starts[1]["epoch"] >= 1
