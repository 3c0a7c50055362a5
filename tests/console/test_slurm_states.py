"""Slurm's job states onto a run's (console.backends.slurm reconcile), Slurm asked through a
stand-in: each state the issue names gives the run state ``ls`` and the console show, with
Slurm's own word beside it (``failed/TIMEOUT``), and a final state the worker recorded stands."""

from __future__ import annotations

from pathlib import Path

import pytest

from lowrank.config import load
from lowrank.rundir import RunDir

from console import backends  # noqa: F401  (registers the Slurm reconciler with the store)
from console.backends.slurm import state as slurm_state
from console.runs import RunStore

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def slurm_says(monkeypatch):
    """Make Slurm answer ``state`` for every job."""
    said = {}
    monkeypatch.setattr(slurm_state, "available", lambda: True)
    monkeypatch.setattr(slurm_state, "job_state", lambda job, fresh=False: said.get("state"))

    def answer(state: str | None) -> None:
        said["state"] = state
    return answer


def slurm_run(state: str, slurm: str = "RUNNING", **status) -> RunDir:
    run = RunDir.create(load(REPO / "presets" / "quickstart.yaml").to_dict())
    run.update_status(state=state, backend="slurm", slurm_job_id="42", slurm_state=slurm, **status)
    return run


def shown(run: RunDir):
    [info] = [info for info in RunStore().list() if info.run_id == run.run_id]
    return info


@pytest.mark.parametrize("slurm, ours, words", [
    ("CANCELLED", "killed", "was cancelled"),
    ("FAILED", "failed", "ended FAILED"),
    ("TIMEOUT", "failed", "hit its time limit"),
    ("PREEMPTED", "failed", "was preempted"),
    ("NODE_FAIL", "failed", "lost its node"),
    ("OUT_OF_MEMORY", "failed", "ran out of memory"),
    ("COMPLETED", "failed", "recorded no final state"),
])
def test_a_job_that_ended_without_the_workers_word(home, slurm_says, slurm, ours, words):
    run = slurm_run("running")
    slurm_says(slurm)
    info = shown(run)
    assert (info.state, info.slurm_state, info.state_shown) == (ours, slurm, f"{ours}/{slurm}")
    assert words in info.error and "42" in info.error
    assert run.read_status()["state"] == ours  # written back: the next look does not ask again


@pytest.mark.parametrize("before, slurm, ours", [
    ("queued", "PENDING", "queued"), ("queued", "RUNNING", "running"), ("running", "RUNNING", "running"),
    ("queued", "REQUEUED", "queued"), ("running", "COMPLETING", "running"),
])
def test_a_job_in_the_queue_or_running(home, slurm_says, before, slurm, ours):
    run = slurm_run(before, slurm="PENDING")
    slurm_says(slurm)
    info = shown(run)
    assert (info.state, info.slurm_state, info.state_shown) == (ours, slurm, f"{ours}/{slurm}")


@pytest.mark.parametrize("final", ["finished", "failed", "killed"])
def test_the_workers_final_state_stands_when_the_job_completes(home, slurm_says, final):
    run = slurm_run(final, kill_requested="now" if final == "killed" else None)
    slurm_says("COMPLETED" if final == "finished" else "CANCELLED" if final == "killed" else "FAILED")
    assert shown(run).state == final


def test_a_worker_stopped_by_the_time_limit_is_not_a_users_kill(home, slurm_says):
    """The worker recorded ``killed`` (Slurm's SIGTERM at the limit); nobody ran lowrank kill."""
    run = slurm_run("killed", error="stopped by SIGTERM")
    slurm_says("TIMEOUT")
    info = shown(run)
    assert info.state_shown == "failed/TIMEOUT" and "hit its time limit" in info.error


def test_a_job_slurm_forgot_fails_the_unfinished_run(home, slurm_says):
    run = slurm_run("running")
    slurm_says(None)
    info = shown(run)
    assert info.state_shown == "failed/UNKNOWN" and "is gone" in info.error


def test_ls_says_a_queued_slurm_run_waits_in_slurm_with_its_reason(home, slurm_says, monkeypatch):
    """Not "waiting for the scheduler's next round": this host's queue never places a Slurm run."""
    from typer.testing import CliRunner

    from console.cli import app

    run = slurm_run("queued", slurm="PENDING")
    slurm_says("PENDING")
    monkeypatch.setattr(slurm_state, "pending_reason", lambda job: "Resources")
    result = CliRunner().invoke(app, ["ls"])
    assert result.exit_code == 0, result.output
    assert f"{run.run_id}: waiting in Slurm: job 42 PENDING (Resources)" in result.output
    assert "scheduler" not in result.output
