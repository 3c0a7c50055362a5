"""The run store: listing, unique-prefix resolution, reconciliation, incremental metrics."""

from __future__ import annotations

import json
import os
import subprocess

import psutil
import pytest

from lowrank.errors import UserError
from lowrank.rundir import RunDir

from console.runs import MetricsTail, RunStore, reconcile, run_info


def make(home, name: str, run_id: str, **status) -> RunDir:
    config = {"name": name, "model": {"name": "tiny_convnet"}, "data": {"name": "synthetic"},
              "substitute": {"method": "separable", "budget": 0.25}, "train": {"epochs": 10, "device": "cpu"}}
    run = RunDir.create(config, home=home, run_id=run_id)
    if status:
        run.update_status(**status)
    return run


def test_resolve_prefixes(home):
    make(home, "alpha", "20240101-120000-alpha-aaaa")
    make(home, "alpine", "20240101-130000-alpine-bbbb")
    beta = make(home, "beta", "20240102-090000-beta-cccc")
    store = RunStore(home)
    assert store.resolve("20240102").run_id == beta.run_id
    assert store.resolve("beta").run_id == beta.run_id  # the part after the timestamp
    assert store.resolve("alpin").run_id.endswith("alpine-bbbb")
    assert store.resolve(str(beta.path)).run_id == beta.run_id  # a path works too
    with pytest.raises(UserError) as ambiguous:
        store.resolve("alp")
    assert "matches 2 runs" in str(ambiguous.value) and "alpha-aaaa" in str(ambiguous.value)
    with pytest.raises(UserError) as missing:
        store.resolve("gamma")
    assert "no run matches" in str(missing.value) and "beta-cccc" in str(missing.value)  # recent runs listed


def test_list_fields_and_filter(home):
    make(home, "done", "20240101-000000-done-0001", state="finished", epoch=10, started="2024-01-01T00:00:00+00:00",
         ended="2024-01-01T00:10:00+00:00", params=1234, best_val_err1=7.5, last_loss=0.25, gpus=[])
    make(home, "queued", "20240101-000001-queued-0002")
    infos = RunStore(home).list()
    assert [info.name for info in infos] == ["done", "queued"]
    done = infos[0]
    assert (done.model, done.method, done.budget, done.params, done.state) == ("tiny_convnet", "separable", 0.25,
                                                                                1234, "finished")
    assert done.elapsed_s == 600 and done.eta_s is None and done.best_err1 == 7.5 and done.gpus == []
    assert [info.name for info in RunStore(home).list(["queued"])] == ["queued"]
    json.dumps([info.to_dict() for info in infos])  # --json must serialise


def test_eta_from_progress(home):
    run = make(home, "r", "20240101-000000-r-0001")
    status = {"state": "running", "epoch": 4, "epochs": 10, "started": "2024-01-01T00:00:00+00:00",
              "launch_epoch": 2}
    now = 1704067200.0 + 100  # 100 s after start, 2 epochs done since launch
    info = run_info(run, status, run.read_config(), now=now)
    assert info.elapsed_s == pytest.approx(100) and info.eta_s == pytest.approx(50 * 6)


@pytest.mark.subprocess
def test_reconcile_marks_vanished_worker_failed(home):
    proc = subprocess.Popen(["true"])
    created = psutil.Process(proc.pid).create_time()
    proc.wait()
    run = make(home, "gone", "20240101-000000-gone-0001", state="running", pid=proc.pid, pgid=proc.pid,
               create_time=created)
    status = reconcile(run)
    assert status["state"] == "failed" and status["error"].startswith("worker disappeared")
    assert status["ended"]


@pytest.mark.subprocess
def test_reconcile_marks_a_worker_that_died_of_a_kill_killed(home):
    # the TUI's reader can see the worker gone before kill_run writes the final status:
    # the run was killed, not a crash, and must not end "failed"
    proc = subprocess.Popen(["true"])
    created = psutil.Process(proc.pid).create_time()
    proc.wait()
    run = make(home, "k", "20240101-000000-k-0001", state="running", pid=proc.pid, pgid=proc.pid,
               create_time=created, kill_requested="2024-01-01T00:00:05+00:00")
    status = reconcile(run)
    assert status["state"] == "killed" and "lowrank kill" in status["error"]
    assert run.read_status()["state"] == "killed"


@pytest.mark.subprocess
def test_reconcile_leaves_a_final_state_written_meanwhile(home):
    proc = subprocess.Popen(["true"])
    created = psutil.Process(proc.pid).create_time()
    proc.wait()
    run = make(home, "w", "20240101-000000-w-0001", state="running", pid=proc.pid, create_time=created)
    stale = run.read_status()
    run.update_status(state="finished", exit_code=0)  # the worker's last write, after our read
    assert reconcile(run, stale)["state"] == "finished"
    assert run.read_status()["state"] == "finished"


@pytest.mark.subprocess
def test_reconcile_keeps_live_worker(home):
    run_id = "20240101-000000-alive-0001"
    proc = subprocess.Popen(["sleep", "30"], env={**os.environ, "LOWRANK_RUN_ID": run_id})  # as launched
    try:
        run = make(home, "alive", run_id, state="running", pid=proc.pid,
                   create_time=psutil.Process(proc.pid).create_time())
        assert reconcile(run)["state"] == "running"
        assert RunStore(home).pid_map().get(proc.pid) == run.run_id
        # the same pid with another create time is not the recorded worker, but a process of the
        # run still lives (it carries the run's id): not dead (a clock step looks just like this)
        run.update_status(create_time=psutil.Process(proc.pid).create_time() - 50)
        assert reconcile(run)["state"] == "running"
    finally:
        proc.kill()
        proc.wait()
    assert reconcile(run)["state"] == "failed"  # now nothing of the run is left


@pytest.mark.subprocess
def test_reconcile_ignores_a_live_pid_that_is_not_the_runs(home):
    """The recorded pid and start time name a live process that is not this run's worker
    (no LOWRANK_RUN_ID, no run id on its command line): the worker is gone."""
    proc = subprocess.Popen(["sleep", "30"])
    try:
        run = make(home, "other", "20240101-000000-other-0001", state="running", pid=proc.pid,
                   create_time=psutil.Process(proc.pid).create_time())
        assert reconcile(run)["state"] == "failed"
    finally:
        proc.kill()
        proc.wait()


def test_metrics_tail_reads_only_new_whole_lines(tmp_path):
    path = tmp_path / "metrics.jsonl"
    tail = MetricsTail(path)
    assert tail.read() == []  # no file yet
    path.write_bytes(b'{"a": 1}\n{"a": 2}\n{"a": ')
    assert tail.read() == [{"a": 1}, {"a": 2}]
    assert tail.read() == []  # the torn line waits
    with open(path, "ab") as handle:
        handle.write(b'3}\n{"a": 4}\n')
    assert tail.read() == [{"a": 3}, {"a": 4}]
    assert tail.offset == path.stat().st_size
    path.write_bytes(b'{"b": 1}\n')  # replaced by a shorter file: start over
    assert tail.read() == [{"b": 1}]
