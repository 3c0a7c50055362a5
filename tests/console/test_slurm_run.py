"""A quickstart submitted to the real Slurm cluster runs to ``finished``: ``ls --json`` shows its
``slurm_job_id`` and Slurm's state, sacct has the job COMPLETED, ``logs`` prints the worker's
output, and this host's scheduler never touched it. Bad input creates nothing."""

from __future__ import annotations

import json

import pytest

from slurm_helpers import REPO, cli, sacct_states, slurm_env, status, wait_left_queue, wait_state, write_preset


@pytest.mark.slurm
@pytest.mark.slow
def test_a_run_submitted_to_slurm_finishes(home, tmp_path, slurm_home):
    """The quickstart preset itself (2 of its epochs), as the README's third line sends it."""
    env = slurm_home
    preset = REPO / "presets" / "quickstart.yaml"
    done = cli("run", str(preset), "--backend", "slurm", "--set", "train.epochs=2", "--json", env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    summary = json.loads(done.stdout)
    assert summary["state"] == "finished" and summary["test_err1"] is not None
    run_id = summary["run_id"]

    wait_left_queue(status(home, run_id)["slurm_job_id"])
    [row] = [row for row in json.loads(cli("ls", "--json", env=env).stdout) if row["run_id"] == run_id]
    job = row["slurm_job_id"]
    assert row["state"] == "finished" and row["backend"] == "slurm" and job and job.isdigit()
    assert row["slurm_state"] == "COMPLETED"  # what Slurm says now that the job ended
    assert "COMPLETED" in sacct_states(job)  # the accounting record (slurmdbd)
    recorded = status(home, run_id)
    assert recorded["slurm_node"] and recorded["attempt"] == 1 and recorded["results_written"] is True

    logs = cli("logs", run_id, env=env)
    assert logs.returncode == 0 and f"Slurm job {job}" in logs.stdout and "finished: test err" in logs.stdout
    assert not (home / "scheduler.log").exists()  # the local queue was never involved


@pytest.mark.slurm
@pytest.mark.slow
def test_preset_backend_slurm_and_detach(home, tmp_path, slurm_home):
    """``resources.backend: slurm`` in the preset alone sends the run to Slurm; --detach returns at once."""
    env = slurm_home
    done = cli("run", str(write_preset(tmp_path, epochs=1)), "--detach", "--json", env=env)
    assert done.returncode == 0, done.stderr
    run_id = json.loads(done.stdout)["run_id"]
    recorded = status(home, run_id)
    assert recorded["backend"] == "slurm" and recorded["slurm_job_id"]
    assert wait_state(env, run_id, ("finished", "failed", "killed"), timeout=120)["state"] == "finished"


@pytest.mark.subprocess
def test_no_sbatch_refuses_and_creates_nothing(home, tmp_path, slurm_home):
    """Where Slurm is absent, ``--backend slurm`` is one line naming the fix; no run directory."""
    env = slurm_home
    empty = tmp_path / "bin"
    empty.mkdir()
    env["PATH"] = str(empty)  # the CLI runs by its full path; no sbatch, squeue, git on PATH
    done = cli("run", str(write_preset(tmp_path)), "--backend", "slurm", env=env)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Slurm is not available" in done.stderr and "Traceback" not in done.stderr
    assert not (home / "runs").exists() or not any((home / "runs").iterdir())


@pytest.mark.subprocess
def test_unknown_backend_is_one_line(home, tmp_path):
    done = cli("run", str(write_preset(tmp_path)), "--backend", "pbs", env=slurm_env(home))
    assert done.returncode == 2 and "unknown backend 'pbs'" in done.stderr and "slurm" in done.stderr
    assert not (home / "runs").exists()
