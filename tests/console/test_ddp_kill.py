"""Killing a data-parallel run through the local backend: torchrun's agent, both ranks and their
DataLoader workers are all gone afterwards, found through the same sweep as a 1-process run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from lowrank.config import load
from lowrank.rundir import RunDir

from console.backends.local import kill_run, start_worker
from fake_worker import wait_for
from process_helpers import marked_processes as tagged

REPO = Path(__file__).resolve().parents[2]

LONG = [  # epochs of 256 steps, 2 loader workers per rank: alive while the run trains
    "model.name=tiny_convnet", "model.kwargs.width=8", "data.name=synthetic", "data.batch_size=16",
    "data.kwargs={num_classes: 4, channels: 1, image_size: 8, num_train: 4096, num_val: 32, num_test: 32}",
    "data.workers=2", "train.epochs=50", "train.device=cpu", "train.sync_bn=true", "resources.nproc=2",
    "log.step_every=4",
]


@pytest.mark.slow
@pytest.mark.subprocess
def test_kill_of_a_two_rank_run_leaves_no_process(home, monkeypatch):
    monkeypatch.delenv("LOWRANK_WORKER", raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    run = RunDir.create(load(REPO / "presets" / "quickstart.yaml", LONG).to_dict())
    agent = start_worker(run, gpus=[])
    status = wait_for(lambda: run.read_status() if run.read_status().get("rank_pids") else None, 120,
                      what="both ranks up")
    assert status["pid"] == agent and status["world_size"] == 2 and status["launcher"] == "torchrun"
    ranks = [psutil.Process(pid) for pid in status["rank_pids"]]
    assert all(rank.ppid() == agent for rank in ranks)  # torchrun's agent started them

    def loader_workers():  # each rank's DataLoader workers, once both have them
        kids = [rank.children() for rank in ranks]
        return kids if all(len(k) >= 2 for k in kids) else None

    workers = [proc for kids in wait_for(loader_workers, 120, what="loader workers") for proc in kids]
    tree = [psutil.Process(agent), *ranks, *workers]
    print(subprocess.run(["ps", "-o", "pid,ppid,pgid,sid,cmd", "--forest", "-p", ",".join(str(p.pid) for p in tree)],
                         capture_output=True, text=True).stdout)  # the process tree, shown with -s
    before = {proc.pid: proc.create_time() for proc in tree}
    assert set(before) <= set(tagged(run.run_id))

    report = kill_run(run, grace=20, nvml_wait=0)
    print(report.message)
    assert report.survivors == [] and report.sigkilled == [] and set(before) <= set(report.pids), report
    for pid, born in before.items():  # gone: no such pid, a reused pid, or an unreaped zombie
        try:
            proc = psutil.Process(pid)
            assert abs(proc.create_time() - born) > 1e-3 or proc.status() == psutil.STATUS_ZOMBIE, pid
        except psutil.NoSuchProcess:
            pass
    assert tagged(run.run_id) == []
    final = run.read_status()
    assert final["state"] == "killed" and final["error"] == "stopped by SIGTERM", final  # the ranks stopped cleanly


@pytest.mark.slow
@pytest.mark.subprocess
def test_lowrank_run_refuses_a_batch_the_ranks_cannot_split(home):
    """--nproc 2 with batch 15: one error naming the key, exit 2, and no run directory."""
    done = subprocess.run([sys.executable, "-m", "console.cli", "run", str(REPO / "presets" / "quickstart.yaml"),
                           "--nproc", "2", "--cpu", "--set", "data.batch_size=15"],
                          capture_output=True, text=True, env={**os.environ}, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "data.batch_size 15 is the global batch and does not split over 2 ranks" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    assert not (home / "runs").exists() or not any((home / "runs").iterdir())


@pytest.mark.slow
@pytest.mark.subprocess
def test_lowrank_run_nproc_trains_on_two_gloo_ranks(home):
    """The flag end to end: resources.nproc set, torchrun started by the local backend, rank 0's summary."""
    import json

    tiny = ["model.name=tiny_convnet", "model.kwargs.width=8", "data.name=synthetic", "data.batch_size=16",
            "data.kwargs={num_classes: 4, channels: 1, image_size: 8, num_train: 64, num_val: 16, num_test: 16}",
            "train.epochs=1", "train.sync_bn=true"]
    command = [sys.executable, "-m", "console.cli", "run", str(REPO / "presets" / "quickstart.yaml"), "--nproc", "2",
               "--cpu", "--json"]
    for override in tiny:
        command += ["--set", override]
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
                          timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    summary = json.loads(done.stdout)
    assert summary["state"] == "finished" and summary["test_err1"] is not None
    run = RunDir(summary["run_dir"])
    status = run.read_status()
    assert run.read_config()["resources"]["nproc"] == 2
    assert status["world_size"] == 2 and status["launcher"] == "torchrun" and len(status["rank_pids"]) == 2
    assert status["command"][1:6] == ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
