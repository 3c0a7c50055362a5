"""A run on two nodes started by hand (``lowrank run --nnodes 2 --node-rank R --master HOST:PORT`` on
each), both "machines" this one on the loopback, gloo on the CPU: node 0 creates the run, node 1
finds it and writes nothing but ``output.node1.log``; status.json lists both nodes with their
rank pids; ``lowrank kill`` mid-epoch stops every rank on both nodes and both ``lowrank run``
commands end; ``--resume`` on both nodes continues from the checkpoint, and the run ends with the
per-epoch losses and errors of a 1-process run of the same global batch (``train.sync_bn``).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import yaml

from process_helpers import marked_processes as tagged

pytestmark = [pytest.mark.slow, pytest.mark.subprocess]
REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def events(run_dir: Path, kind: str) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [event for event in map(json.loads, lines) if event["event"] == kind]


@pytest.fixture
def env(home):
    environment = {key: value for key, value in os.environ.items() if key != "LOWRANK_WORKER"}
    environment.update(LOWRANK_HOME=str(home), PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    return environment


def lowrank(*args: str, env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "console.cli", *args], cwd=REPO, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def finish(proc: subprocess.Popen, timeout: float = 240) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        found = predicate()
        if found:
            return found
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_two_nodes_by_hand_kill_resume_equal_one_process(tmp_path, home, env):
    preset = tmp_path / "hand.yaml"  # 24 steps an epoch, a checkpoint each epoch and at the kill
    preset.write_text(yaml.safe_dump({
        "name": "hand", "model": {"name": "tiny_convnet", "kwargs": {"width": 8}},
        "data": {"name": "synthetic", "batch_size": 32,
                 "kwargs": {"image_size": 8, "num_train": 768, "num_val": 64, "num_test": 64}},
        "train": {"epochs": 4, "device": "cpu", "lr": 0.05, "sync_bn": True},
        "log": {"checkpoint_every": 1, "step_every": 2}}))

    alone = finish(lowrank("run", str(preset), "--cpu", "--json", env=env))
    assert alone[0] == 0, alone
    one = json.loads(alone[1])

    master = f"127.0.0.1:{free_port()}"
    hand = ["--cpu", "--nnodes", "2", "--master", master, "--json"]
    node1 = lowrank("run", str(preset), "--node-rank", "1", *hand, env=env)  # waits for node 0's run
    time.sleep(1.0)
    node0 = lowrank("run", str(preset), "--node-rank", "0", *hand, env=env)
    runs = home / "runs"
    # the run directory once its status.json is there (RunDir.create makes the directory first)
    run_dir = wait_for(lambda: [path for path in runs.glob("*") if path.name != one["run_id"]
                                and (path / "status.json").exists()], 60, "node 0's run")[0]
    run_id = run_dir.name

    # mid-epoch: a step event of the second epoch, once every rank recorded itself
    def mid_epoch():
        status = json.loads((run_dir / "status.json").read_text())
        steps = [event for event in events(run_dir, "step") if event["epoch"] == 2] \
            if (run_dir / "metrics.jsonl").exists() else []
        return status if steps and status.get("nodes") else None

    status = wait_for(mid_epoch, 180, "the second epoch")
    assert status["world_size"] == 2 and status["nnodes"] == 2 and status["master"] == master
    assert [node["node_rank"] for node in status["nodes"]] == [0, 1]
    assert [node["ranks"] for node in status["nodes"]] == [[0], [1]]
    for node in status["nodes"]:  # each node's rank runs under that node's torchrun agent
        assert psutil.Process(node["pids"][0]).ppid() == node["agent_pid"]
    before = set(tagged(run_id))
    assert {node["agent_pid"] for node in status["nodes"]} | set(status["rank_pids"]) <= before

    killed = subprocess.run([sys.executable, "-m", "console.cli", "kill", run_id], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=120)
    assert killed.returncode == 0, killed.stdout + killed.stderr
    code0, _, err0 = finish(node0, 120)
    code1, _, err1 = finish(node1, 120)
    assert code0 != 0 and code1 != 0, (err0, err1)  # both commands end, saying the run was killed
    assert wait_for(lambda: not tagged(run_id) or None, 30, "every process of the run gone")
    stopped = json.loads((run_dir / "status.json").read_text())
    assert stopped["state"] == "killed", stopped
    import torch

    mid = torch.load(run_dir / "checkpoint.pt", map_location="cpu", weights_only=False)["mid_epoch"]
    assert mid is not None and mid["epoch"] == 1 and 0 < mid["batches"] < 24, mid  # stopped inside epoch 2

    master = f"127.0.0.1:{free_port()}"  # the resumed attempt meets at a new port
    again = ["--cpu", "--nnodes", "2", "--master", master, "--json"]
    node1 = lowrank("run", "--resume", run_id, "--node-rank", "1", *again, env=env)
    time.sleep(1.0)
    node0 = lowrank("run", "--resume", run_id, "--node-rank", "0", *again, env=env)
    code0, out0, err0 = finish(node0)
    code1, out1, err1 = finish(node1)
    assert code0 == 0 and code1 == 0, (err0, err1)
    two = json.loads(out0)
    assert two["state"] == "finished" and json.loads(out1)["run_id"] == run_id
    assert not tagged(run_id)

    starts = events(run_dir, "start")
    assert [start["resumed"] for start in starts] == [False, True] and starts[1]["epoch"] == 1, starts
    for key in ("final_val_err1", "best_val_err1", "test_err1", "test_err5"):
        assert two[key] == pytest.approx(one[key], abs=1e-4), key
    losses = [event["loss"] for event in events(run_dir, "epoch")]
    reference = [event["loss"] for event in events(runs / one["run_id"], "epoch")]
    assert len(losses) == 4 and losses == pytest.approx(reference, abs=1e-4)

    # node 1 wrote nothing but its own log: the files are the 1-process run's and output.node1.log
    files = {path.name for path in run_dir.iterdir()}
    assert files - {path.name for path in (runs / one["run_id"]).iterdir()} == {"output.node1.log"}, files
    assert "node 1/2" in (run_dir / "output.node1.log").read_text()
