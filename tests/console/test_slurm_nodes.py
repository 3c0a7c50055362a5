"""A run as one Slurm job on two nodes (``--nodes 2`` on the test cluster's partition ``multi``:
nodeA and nodeB, two slurmd on this machine), one torchrun launcher per node, gloo on the CPU:
sacct shows one job on both nodes; status.json lists both nodes and their rank pids;
``lowrank kill`` mid-epoch (scancel) leaves no process of the run on either node; ``--resume``
submits a 2-node job again, which continues from the checkpoint and ends with the per-epoch
losses and errors of a 1-process run of the same global batch (``train.sync_bn``).
"""

from __future__ import annotations

import json
import subprocess
import time

import psutil
import pytest

from slurm_helpers import cli, status, wait_left_queue, wait_state, write_preset
from process_helpers import marked_processes as tagged

pytestmark = [pytest.mark.slurm, pytest.mark.slow]


def sacct_allocation(job: str) -> dict[str, str]:
    out = subprocess.run(["sacct", "--noheader", "--parsable2", "--allocations", "--jobs", job,
                          "--format=JobID,NNodes,NodeList,State"], capture_output=True, text=True, check=True).stdout
    rows = [line.split("|") for line in out.splitlines() if line.split("|")[0] == job]
    return dict(zip(("job", "nnodes", "nodelist", "state"), rows[-1])) if rows else {}


def events(run_dir, kind: str) -> list[dict]:
    return [event for event in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())
            if event["event"] == kind]


def test_two_node_job_kill_resume_equal_one_process(home, tmp_path, slurm_home):
    env = slurm_home
    preset = write_preset(tmp_path, epochs=4, num_train=768, name="nodes",
                          slurm={"partition": "multi", "time": 10})
    sync = ["--set", "train.sync_bn=true", "--set", "log.step_every=2"]
    alone = cli("run", str(preset), *sync, "--backend", "local", "--cpu", "--json", env=env)
    assert alone.returncode == 0, alone.stdout + alone.stderr
    one = json.loads(alone.stdout)

    done = cli("run", str(preset), *sync, "--nodes", "2", "--detach", "--json", env=env)
    assert done.returncode == 0, done.stderr
    run_id = json.loads(done.stdout)["run_id"]
    run_dir = home / "runs" / run_id
    deadline = time.monotonic() + 180
    while True:  # mid-epoch: a step of the second epoch, once rank 0 listed every node
        recorded = status(home, run_id)
        steps = [e for e in events(run_dir, "step") if e["epoch"] == 2] if (run_dir / "metrics.jsonl").exists() else []
        if steps and recorded.get("nodes"):
            break
        assert recorded.get("state") in ("queued", "running") and time.monotonic() < deadline, recorded
        time.sleep(0.1)
    job = recorded["slurm_job_id"]
    assert recorded["world_size"] == 2 and recorded["nnodes"] == 2 and recorded["slurm_nodes"] == ["nodeA", "nodeB"]
    assert sorted(node["node"] for node in recorded["nodes"]) == ["nodeA", "nodeB"]
    assert sorted(rank for node in recorded["nodes"] for rank in node["ranks"]) == [0, 1]
    for node in recorded["nodes"]:
        assert psutil.Process(node["pids"][0]).ppid() == node["agent_pid"]  # under its node's torchrun agent
    pids = tagged(run_id)
    for pid in sorted(pids):  # the run's processes on both nodes (pytest -s shows them)
        proc = psutil.Process(pid)
        print(pid, proc.ppid(), proc.environ().get("SLURMD_NODENAME"), " ".join(proc.cmdline())[:160])
    assert set(recorded["rank_pids"]) <= set(pids)

    killed = cli("kill", run_id, env=env)
    assert killed.returncode == 0, killed.stdout + killed.stderr
    wait_left_queue(job)
    deadline = time.monotonic() + 30
    while tagged(run_id):  # slurmstepd signals every task's process tree on both nodes
        assert time.monotonic() < deadline, [psutil.Process(pid).cmdline() for pid in tagged(run_id)]
        time.sleep(0.2)
    assert wait_state(env, run_id, ("killed",), timeout=30)["state"] == "killed"
    allocation = sacct_allocation(job)
    assert allocation["nnodes"] == "2" and allocation["nodelist"] == "nodeA,nodeB", allocation
    assert allocation["state"].startswith("CANCELLED"), allocation

    resumed = cli("run", "--resume", run_id, "--json", env=env)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    two = json.loads(resumed.stdout)
    assert two["state"] == "finished"
    again = status(home, run_id)
    assert again["slurm_job_id"] != job and again["world_size"] == 2 and len(again["nodes"]) == 2
    wait_left_queue(again["slurm_job_id"])
    allocation = sacct_allocation(again["slurm_job_id"])
    assert (allocation["nnodes"], allocation["nodelist"], allocation["state"]) == ("2", "nodeA,nodeB", "COMPLETED")
    assert not tagged(run_id)

    starts = events(run_dir, "start")
    assert [start["resumed"] for start in starts] == [False, True] and starts[1]["epoch"] == 1, starts
    for key in ("final_val_err1", "best_val_err1", "test_err1", "test_err5"):
        assert two[key] == pytest.approx(one[key], abs=1e-4), key
    losses = [event["loss"] for event in events(run_dir, "epoch")]
    reference = [event["loss"] for event in events(home / "runs" / one["run_id"], "epoch")]
    assert len(losses) == 4 and losses == pytest.approx(reference, abs=1e-4)
    assert (run_dir / "output.node0.log").exists() and (run_dir / "output.node1.log").exists()
    assert "rank 0 of 2" in (run_dir / "output.log").read_text()
    shown = cli("show", run_id, env=env).stdout
    assert "2 ranks on 2 nodes: node" in shown, shown
