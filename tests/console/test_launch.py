"""The local launcher with real processes: start, kill (process trees, stubborn and
escaped children, pid reuse), launcher crashes, reaping, relaunch and resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from lowrank.errors import UserError
from lowrank.rundir import RunDir

from console.launch import RUN_ENV, kill_run, relaunch, run_processes, start_worker, worker_process
from console.runs import RunStore
from fake_worker import children_of, fake_config, gone, wait_for
from process_helpers import marked_processes

REPO = Path(__file__).resolve().parents[2]


def identities(pids) -> dict[int, float]:
    out = {}
    for pid in pids:
        try:
            out[pid] = psutil.Process(pid).create_time()
        except psutil.NoSuchProcess:
            pass
    return out


@pytest.mark.subprocess
def test_start_records_identity_pins_gpus_and_logs_to_file(fake):
    run = RunDir.create(fake_config(epochs=200, step_seconds=0.05), home=fake)
    pid = start_worker(run, gpus=[1, 3])
    try:
        status = wait_for(lambda: run.read_status() if run.read_status().get("pgid") else None)
        proc = psutil.Process(pid)
        assert status["pid"] == pid and status["sid"] == pid and status["gpus"] == [1, 3]
        assert abs(status["create_time"] - proc.create_time()) < 1e-6
        assert os.getpgid(pid) == pid and os.getsid(pid) == pid  # own group and session
        env = proc.environ()
        assert env["CUDA_VISIBLE_DEVICES"] == "1,3" and env["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
        assert env[RUN_ENV] == run.run_id and env["PYTHONUNBUFFERED"] == "1"
        # stdout/stderr go to output.log (a file, not a pipe), stdin is /dev/null
        assert os.readlink(f"/proc/{pid}/fd/1") == str(run.file("output.log"))
        assert os.readlink(f"/proc/{pid}/fd/0") == "/dev/null"
        assert "launch" in run.file("output.log").read_text()
        with pytest.raises(UserError, match="already running"):
            start_worker(run, gpus=[])
    finally:
        kill_run(run, grace=5)
    assert run.read_status()["state"] == "killed"


@pytest.mark.subprocess
def test_cpu_run_hides_gpus(fake):
    run = RunDir.create(fake_config(epochs=1, steps_per_epoch=50, step_seconds=0.05), home=fake)
    pid = start_worker(run, gpus=[])
    try:
        assert psutil.Process(pid).environ()["CUDA_VISIBLE_DEVICES"] == ""
    finally:
        kill_run(run, grace=5)


@pytest.mark.slow
@pytest.mark.subprocess
def test_kill_leaves_nothing_dataloader_workers_stubborn_child_and_orphan(fake):
    """4 real DataLoader worker processes, a child ignoring SIGTERM, and a grandchild that
    left the session via setsid and was orphaned: all are gone after kill."""
    run = RunDir.create(fake_config(epochs=1000, loader_workers=4, stubborn_child=True, orphan=True,
                                    step_seconds=0.02), home=fake)
    start_worker(run, gpus=[])
    kids = children_of(run, timeout=90)  # torch import + 4 workers
    assert len(kids["loader"]) == 4 and len(kids["stubborn"]) == 1 and len(kids["orphan"]) == 1
    orphan = psutil.Process(kids["orphan"][0])
    assert os.getsid(orphan.pid) != run.read_status()["sid"]  # really left the session
    assert os.getpgid(orphan.pid) != run.read_status()["pgid"]
    before = run_processes(run)
    recorded = identities([run.read_status()["pid"], *sum(kids.values(), [])])
    assert set(recorded) <= set(before)  # the snapshot finds every one of them

    report = kill_run(run, grace=5)

    assert report.survivors == []
    assert set(recorded) <= set(report.pids)
    for pid, created in recorded.items():
        assert gone(pid, created), f"pid {pid} survived the kill"
    assert kids["stubborn"][0] in report.sigkilled and kids["orphan"][0] in report.sigkilled
    assert run.read_status()["pid"] in report.exited  # the worker itself stopped cleanly on SIGTERM
    status = run.read_status()
    assert status["state"] == "killed" and status["exit_code"] == 128 + signal.SIGTERM
    assert json.loads(run.file("metrics.jsonl").read_text().splitlines()[-1])["event"] == "end"
    assert marked_processes(run.run_id) == []


@pytest.mark.subprocess
def test_force_kill_of_worker_ignoring_sigterm(fake):
    run = RunDir.create(fake_config(epochs=1000, ignore_sigterm=True, sleepers=2), home=fake)
    start_worker(run, gpus=[])
    kids = children_of(run)
    recorded = identities([run.read_status()["pid"], *kids["sleepers"]])
    report = kill_run(run, grace=0.5)
    assert report.survivors == [] and run.read_status()["pid"] in report.sigkilled
    assert all(gone(pid, created) for pid, created in recorded.items())
    status = run.read_status()
    assert status["state"] == "killed" and "SIGKILL" in status["error"]


@pytest.mark.slow
@pytest.mark.subprocess
def test_a_worker_that_stopped_but_exits_slowly_is_not_sigkilled(fake):
    """It recorded its stop within the grace and then took longer to exit (torch's teardown, torchrun's
    agent waiting for its ranks, on a loaded host): the kill waits for it, and never says it ignored SIGTERM."""
    run = RunDir.create(fake_config(epochs=1000, slow_exit=2.5), home=fake)
    start_worker(run, gpus=[])
    children_of(run)  # it is training
    pid = run.read_status()["pid"]
    report = kill_run(run, grace=0.5)
    assert report.sigkilled == [] and report.survivors == [] and pid in report.exited, report
    assert "ignored SIGTERM" not in report.message
    status = run.read_status()
    assert status["state"] == "killed" and status["error"] == "stopped by SIGTERM"


@pytest.mark.slow
@pytest.mark.subprocess
def test_fifty_launch_kill_cycles_leave_no_process(fake):
    recorded: dict[int, float] = {}
    runs = []
    for cycle in range(50):
        run = RunDir.create(fake_config(name=f"cycle{cycle}", epochs=1000, sleepers=1), home=fake)
        runs.append(run)
        start_worker(run, gpus=[])
        kids = children_of(run)
        recorded.update(identities([run.read_status()["pid"], *kids["sleepers"]]))
        report = kill_run(run, grace=5, nvml_wait=0)
        assert report.survivors == [] and report.state == "killed"
    assert len(recorded) == 100
    survivors = [pid for pid, created in recorded.items() if not gone(pid, created)]
    assert survivors == []
    ids = {run.run_id for run in runs}
    for proc in psutil.process_iter():
        try:
            assert proc.environ().get(RUN_ENV) not in ids or proc.status() == psutil.STATUS_ZOMBIE
        except psutil.Error:
            continue
    # the launcher (this process) reaped every worker: no zombie children accumulate
    wait_for(lambda: not [child for child in psutil.Process().children()
                          if child.status() == psutil.STATUS_ZOMBIE], 5, what="reaped children")


LAUNCHER = """
import sys, time
from lowrank.rundir import RunDir
from console.launch import start_worker
pid = start_worker(RunDir(sys.argv[1]), gpus=[])
print(pid, flush=True)
if sys.argv[2] == "stay":
    time.sleep(600)
"""


@pytest.mark.slow
@pytest.mark.subprocess
def test_kill_9_of_the_launcher_leaves_the_run_going_and_listed(fake):
    run = RunDir.create(fake_config(epochs=20, steps_per_epoch=5, step_seconds=0.03), home=fake)
    launcher = subprocess.Popen([sys.executable, "-c", LAUNCHER, str(run.path), "stay"], stdout=subprocess.PIPE,
                                text=True, cwd=REPO)
    worker_pid = int(launcher.stdout.readline())
    wait_for(lambda: (run.read_status().get("epoch") or 0) >= 1, what="first epoch")
    launcher.send_signal(signal.SIGKILL)
    launcher.wait()

    epoch_at_kill = run.read_status()["epoch"]
    info = {item.run_id: item for item in RunStore(fake).list()}[run.run_id]
    assert info.state == "running" and info.pid == worker_pid
    assert worker_process(run.read_status()) is not None
    # it keeps training without its launcher and records its own end
    status = wait_for(lambda: run.read_status() if run.read_status()["state"] != "running" else None, 30,
                      what="the run to finish")
    assert status["state"] == "finished" and status["epoch"] == 20 > epoch_at_kill


@pytest.mark.subprocess
def test_worker_that_vanishes_is_failed_by_the_reaper(fake):
    run = RunDir.create(fake_config(epochs=5, vanish=True), home=fake)
    start_worker(run, gpus=[])
    status = wait_for(lambda: run.read_status() if run.read_status()["state"] == "failed" else None,
                      what="failed state")
    assert status["exit_code"] == 3 and "without recording a final state" in status["error"]


@pytest.mark.subprocess
def test_worker_that_vanishes_after_its_launcher_is_reconciled_by_ls(fake):
    run = RunDir.create(fake_config(epochs=5, vanish=True, step_seconds=0.3), home=fake)
    out = subprocess.run([sys.executable, "-c", LAUNCHER, str(run.path), "leave"], capture_output=True, text=True,
                         cwd=REPO, check=True)
    worker_pid = int(out.stdout.split()[0])
    wait_for(lambda: gone(worker_pid), what="the worker to exit")
    assert run.read_status()["state"] == "running"  # nobody recorded the end
    info = {item.run_id: item for item in RunStore(fake).list()}[run.run_id]
    assert info.state == "failed" and info.error.startswith("worker disappeared")


@pytest.mark.subprocess
def test_reused_pid_is_never_signalled(fake):
    """A status whose pid now names another process (create time differs) is not ours."""
    bystander = subprocess.Popen(["sleep", "30"])
    try:
        run = RunDir.create(fake_config(), home=fake)
        run.update_status(state="running", pid=bystander.pid, pgid=bystander.pid,
                          create_time=psutil.Process(bystander.pid).create_time() - 100.0)
        assert worker_process(run.read_status()) is None
        report = kill_run(run, grace=0.5)
        assert bystander.poll() is None and report.pids == []
        assert run.read_status()["state"] == "killed"
    finally:
        bystander.kill()
        bystander.wait()


def test_kill_of_queued_run_cancels_it(fake):
    run = RunDir.create(fake_config(), home=fake)
    report = kill_run(run)
    assert report.state == "killed" and report.pids == []
    with pytest.raises(UserError, match="already ended"):
        start_worker(run, gpus=[])


def test_relaunch_fresh_copies_config(fake):
    run = RunDir.create(fake_config(name="orig", epochs=2), home=fake)
    run.update_status(state="failed", requirement={"gpus": 0})
    copy = relaunch(run, resume=False)
    assert copy.run_id != run.run_id and copy.read_config() == run.read_config()
    status = copy.read_status()
    assert status["state"] == "queued" and status["relaunched_from"] == run.run_id
    assert status["requirement"] == {"gpus": 0}


def test_relaunch_resume_checks(fake):
    run = RunDir.create(fake_config(), home=fake)
    run.update_status(state="killed")
    with pytest.raises(UserError, match="no checkpoint"):
        relaunch(run, resume=True)
    run.file("checkpoint.pt").write_bytes(b"x")
    again = relaunch(run, resume=True)
    status = again.read_status()
    assert again.run_id == run.run_id and status["state"] == "queued" and status["resume"] is True
    assert status["previous_attempts"][-1]["state"] == "killed"
    run.update_status(state="finished")
    with pytest.raises(UserError, match="already finished"):
        relaunch(run, resume=True)


# ---------------------------------------------------------------- the real worker


def tiny_config(epochs: int) -> dict:
    """A real experiment: tiny convnet on synthetic data, CPU, checkpoint every epoch."""
    from lowrank.config import validate

    return validate({"name": "tiny", "model": {"name": "tiny_convnet", "kwargs": {"width": 8}},
                     "data": {"name": "synthetic", "batch_size": 32, "workers": 0,
                              "kwargs": {"num_train": 384, "num_val": 64, "num_test": 64, "image_size": 16}},
                     "train": {"epochs": epochs, "device": "cpu", "seed": 0},
                     "log": {"checkpoint_every": 1, "step_every": 1}}).to_dict()


def finish(run: RunDir, timeout: float = 240.0) -> dict:
    return wait_for(lambda: run.read_status() if run.read_status().get("state") in ("finished", "failed", "killed")
                    else None, timeout, interval=0.1, what=f"{run.run_id} to end")


@pytest.mark.slow
@pytest.mark.subprocess
def test_killed_mid_epoch_then_resumed_matches_uninterrupted(home, monkeypatch):
    monkeypatch.delenv("LOWRANK_WORKER", raising=False)
    epochs = 4
    straight = RunDir.create(tiny_config(epochs), home=home)
    start_worker(straight, gpus=[])
    interrupted = RunDir.create(tiny_config(epochs), home=home)
    start_worker(interrupted, gpus=[])

    def in_epoch_two():  # a step of epoch 2 logged: epoch 1 checkpointed, epoch 2 under way
        return any(r.get("event") == "step" and r.get("epoch") == 2 and r.get("batch", 0) >= 2
                   for r in interrupted.read_metrics())

    wait_for(in_epoch_two, 180, interval=0.02, what="epoch 2 of the interrupted run")
    report = kill_run(interrupted, grace=30)
    status = interrupted.read_status()
    assert report.survivors == [] and status["state"] == "killed"
    assert status["epoch"] < epochs  # really stopped before the end
    events = interrupted.read_metrics()
    stopped_in = max(r["epoch"] for r in events if r.get("event") == "step")
    assert not any(r.get("event") == "epoch" and r["epoch"] == stopped_in for r in events)  # mid-epoch

    resumed = relaunch(interrupted, resume=True)
    start_worker(resumed, gpus=[], resume=True)
    a, b = finish(straight), finish(resumed)
    assert a["state"] == b["state"] == "finished", (a, b, straight.file("output.log").read_text(),
                                                    resumed.file("output.log").read_text())
    for key in ("test_loss", "test_err1", "test_err5", "final_val_err1", "best_val_err1", "best_epoch", "last_loss"):
        assert a[key] == b[key], key
    assert b["attempt"] == 2 and b["previous_attempts"][-1]["state"] == "killed"
    # it really continued from the checkpoint (a restart from scratch would also match)
    starts = [r for r in resumed.read_metrics() if r.get("event") == "start"]
    assert len(starts) == 2 and starts[1]["resumed"] is True and starts[1]["epoch"] >= 1
    finished_epochs = [r["epoch"] for r in resumed.read_metrics() if r.get("event") == "epoch"]
    assert finished_epochs.count(1) == 1 and sorted(set(finished_epochs)) == list(range(1, epochs + 1))


@pytest.mark.subprocess
def test_a_live_worker_is_never_started_twice(fake):
    """Even if its state was overwritten (queued again by mistake), a run with a live
    worker refuses a second worker and refuses to be queued."""
    from console.scheduler import submit

    run = RunDir.create(fake_config(epochs=1000), home=fake)
    start_worker(run, gpus=[])
    try:
        children_of(run)
        with pytest.raises(UserError, match="running"):
            submit(run, {"gpus": 0}, resume=True)
        run.update_status(state="queued")
        with pytest.raises(UserError, match="already running"):
            start_worker(run, gpus=[], resume=True)
    finally:
        kill_run(run, grace=5)
