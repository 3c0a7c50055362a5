"""A run longer than its Slurm time limit (1 minute), as a one-node job and as a job on two nodes
(partition ``multi``: a torchrun launcher per node, the signal reaching every rank): Slurm's
signal before the limit stops the worker at a step, the job is requeued, and the next attempt
resumes from the checkpoint (with the same world size) until the run finishes; the history (``previous_attempts``) has one entry per requeue and
metrics.jsonl one resumed start per attempt. Inherently 2-6 minutes: Slurm checks time
limits every 30 s and signals once the limit is within signal_delay_s + 30 s (so each
attempt trains 20-50 s here), and a requeued job waits ``cred_expire`` (10 s on the test
cluster) before it starts again.

So both runs are submitted together when collection ends (``start_early``, marker
``starts_early``: see tests/conftest.py) and these tests, ordered last, check them: those
minutes overlap each other and the rest of the suite. Run alone, the tests submit them."""

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
# two ranks on two nodes, gloo on the loopback, no sync_bn: 0.8 s an epoch on this box, so >= 100 s of
# training where one attempt trains 20-50 s
EPOCHS_TWO_NODES = 120
ENDED = ("finished", "failed", "killed")


class LimitRun:
    """The time-limited run, submitted to the real cluster with a LOWRANK_HOME of its own."""

    def __init__(self, nodes: int = 1) -> None:
        self.nodes = nodes
        self.epochs = EPOCHS if nodes == 1 else EPOCHS_TWO_NODES
        self.root = Path(tempfile.mkdtemp(prefix=f"lowrank-slurm-limit{nodes}-"))
        self.home = self.root / "home"
        self.env = slurm_env(self.home)
        slurm = {"time": 1, "signal_delay_s": 10, "max_requeues": 12, **({"partition": "multi"} if nodes > 1 else {})}
        preset = write_preset(self.root, epochs=self.epochs, num_train=4096, name=f"limit{nodes}", slurm=slurm)
        self.submitted = cli("run", str(preset), "--detach", "--json", *(["--nodes", str(nodes)] if nodes > 1 else []),
                             env=self.env)
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


class LimitRuns:
    """The one-node and the two-node run, submitted one right after the other."""

    def __init__(self) -> None:
        self.by_nodes = {nodes: LimitRun(nodes) for nodes in (1, 2)}

    def wait_ended(self) -> None:
        for run in self.by_nodes.values():
            run.wait_ended()

    def cleanup(self) -> None:
        for run in self.by_nodes.values():
            run.cleanup()


STARTED: list[LimitRuns] = []


def start_early() -> LimitRuns:
    """Called by tests/conftest.py when collection ends: submit now, check at the end."""
    STARTED.append(LimitRuns())
    return STARTED[-1]


@pytest.fixture(scope="module")
def limit_runs():
    if STARTED:  # submitted at collection's end; the conftest cleans them up
        yield STARTED[0]
        return
    started = LimitRuns()
    try:
        yield started
    finally:
        started.cleanup()


@pytest.mark.timeout(780)
@pytest.mark.parametrize("nodes", [1, 2])
def test_time_limit_requeues_and_resumes(limit_runs, nodes):
    limit_run = limit_runs.by_nodes[nodes]
    home, run_id, epochs = limit_run.home, limit_run.run_id, limit_run.epochs
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
    assert trained[-1] == epochs and sorted(set(trained)) == list(range(1, epochs + 1))
    if nodes > 1:  # every attempt ran on both nodes with the same world size
        assert recorded["world_size"] == 2 and len(recorded["nodes"]) == 2
        assert all(attempt["world_size"] == 2 and attempt["slurm_nodes"] == ["nodeA", "nodeB"] for attempt in history)
        assert (home / "runs" / run_id / "output.log").read_text().count("rank 0 of 2 on node") == len(history) + 1
    else:
        assert all(attempt["world_size"] == 1 for attempt in history), history

    wait_left_queue(job)
    states = sacct_states(job)  # one accounting record per attempt
    assert states.count("REQUEUED") == len(history) and states[-1] == "COMPLETED", states
