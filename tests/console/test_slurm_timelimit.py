"""A run longer than its Slurm time limit (1 minute): Slurm's signal before the limit stops the
worker at a step, the job is requeued, and the next attempt resumes from the checkpoint until
the run finishes; the history (``previous_attempts``) has one entry per requeue and
metrics.jsonl one resumed start per attempt. Inherently 2-6 minutes: Slurm checks time
limits every 30 s and signals once the limit is within signal_delay_s + 30 s (so each
attempt trains 20-50 s here), and a requeued job waits ``cred_expire`` (10 s on the test
cluster) before it starts again.

So the run is submitted when collection ends (``start_early``, marker ``starts_early``: see
tests/conftest.py) and this test, ordered last, checks it: those minutes overlap the rest
of the suite. Run alone, the test submits it itself."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import pytest

from slurm_helpers import cancel_leftovers, cli, sacct_states, slurm_env, status, wait_left_queue, wait_state, \
    write_preset

pytestmark = [pytest.mark.slurm, pytest.mark.slow, pytest.mark.starts_early]
# 0.23 s each on a quiet 2-core box here (0.5 s and more under the suite's load): >= 80 s of training
# on a quiet or faster machine, more than the longest attempt (50 s), so it always takes a requeue
# (120 epochs finished in one attempt on CI's faster machine)
EPOCHS = 360
ENDED = ("finished", "failed", "killed")


class LimitRun:
    """The time-limited run, submitted to the real cluster with a LOWRANK_HOME of its own."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="lowrank-slurm-limit-"))
        self.home = self.root / "home"
        self.env = slurm_env(self.home)
        preset = write_preset(self.root, epochs=EPOCHS, num_train=4096, name="limit",
                              slurm={"time": 1, "signal_delay_s": 10, "max_requeues": 12})
        self.submitted = cli("run", str(preset), "--detach", "--json", env=self.env)
        self.run_id = json.loads(self.submitted.stdout)["run_id"] if self.submitted.returncode == 0 else None
        self.row: dict | None = None

    def wait_ended(self, timeout: float = 720) -> dict:
        """The run's ``ls --json`` row once it has ended (polled once; later calls return it)."""
        assert self.run_id is not None, self.submitted.stderr
        if self.row is None:
            self.row = wait_state(self.env, self.run_id, ENDED, timeout=timeout)
        return self.row

    def cleanup(self) -> None:
        cancel_leftovers(self.home)
        shutil.rmtree(self.root, ignore_errors=True)


STARTED: list[LimitRun] = []


def start_early() -> LimitRun:
    """Called by tests/conftest.py when collection ends: submit now, check at the end."""
    STARTED.append(LimitRun())
    return STARTED[-1]


@pytest.fixture
def limit_run():
    if STARTED:  # submitted at collection's end; the conftest cleans it up
        yield STARTED[0]
        return
    started = LimitRun()
    try:
        yield started
    finally:
        started.cleanup()


@pytest.mark.timeout(780)
def test_time_limit_requeues_and_resumes(limit_run):
    home, run_id = limit_run.home, limit_run.run_id
    row = limit_run.wait_ended()
    recorded = status(home, run_id)
    assert row["state"] == "finished", (row, recorded.get("error"))
    job = recorded["slurm_job_id"]

    history = recorded["previous_attempts"]
    assert len(history) >= 1 and all(attempt["state"] == "requeued" for attempt in history), history
    assert all(attempt["slurm_job_id"] == job for attempt in history)  # the same job, requeued
    assert recorded["attempt"] == len(history) + 1

    events = [json.loads(line) for line in (home / "runs" / run_id / "metrics.jsonl").read_text().splitlines()]
    starts = [event for event in events if event["event"] == "start"]
    assert len(starts) == len(history) + 1 and not starts[0]["resumed"]
    # each later attempt resumed from the checkpoint the one before left (at most the epochs it trained;
    # one stopped during its evaluation re-trains that epoch), and the run got past epoch 0 that way
    assert all(start["resumed"] and start["epoch"] <= attempt["epoch"] for start, attempt in zip(starts[1:], history))
    assert [start["epoch"] for start in starts] == sorted(start["epoch"] for start in starts) and starts[-1]["epoch"] > 0
    assert [event["state"] for event in events if event["event"] == "end"] == ["preempted"] * len(history) + ["finished"]
    trained = [event["epoch"] for event in events if event["event"] == "epoch"]
    assert trained[-1] == EPOCHS and sorted(set(trained)) == list(range(1, EPOCHS + 1))

    wait_left_queue(job)
    states = sacct_states(job)  # one accounting record per attempt
    assert states.count("REQUEUED") == len(history) and states[-1] == "COMPLETED", states
