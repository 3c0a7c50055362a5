"""A multi-task Slurm run (``resources.nproc: 2``): one task per rank on the node, each worker
started with the torch.distributed environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR,
MASTER_PORT) from submitit; rank 0 writes output.log, rank 1 output.rank1.log (checked with a
stand-in worker that records its environment, tests/console/env_worker.py); and the real DDP
worker as such a job ends with the 1-process figures. Several nodes (and GPUs) cannot be
tested on this one-node CPU cluster."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from slurm_helpers import cli, status, wait_left_queue, wait_state, write_preset

pytestmark = pytest.mark.slurm
ENV_WORKER = str(Path(__file__).resolve().parent / "env_worker.py")


@pytest.mark.slow
def test_two_tasks_get_the_distributed_environment(home, tmp_path, slurm_home):
    env = {**slurm_home, "LOWRANK_WORKER": ENV_WORKER}
    preset = write_preset(tmp_path, epochs=1, name="ranks")
    done = cli("run", str(preset), "--set", "resources.nproc=2", "--detach", "--json", env=env)
    assert done.returncode == 0, done.stderr
    run_id = json.loads(done.stdout)["run_id"]
    assert wait_state(env, run_id, ("finished", "failed", "killed"), timeout=120)["state"] == "finished"
    job = status(home, run_id)["slurm_job_id"]
    wait_left_queue(job)
    script = (home / "slurm" / job / f"{job}_submission.sh").read_text()
    assert "#SBATCH --ntasks-per-node=2" in script

    run_dir = home / "runs" / run_id
    ranks = [json.loads((run_dir / f"env.rank{rank}.json").read_text()) for rank in (0, 1)]
    assert [(r["RANK"], r["LOCAL_RANK"], r["WORLD_SIZE"], r["SLURM_PROCID"]) for r in ranks] == [
        ("0", "0", "2", "0"), ("1", "1", "2", "1")]
    assert ranks[0]["MASTER_ADDR"] == ranks[1]["MASTER_ADDR"] and ranks[0]["MASTER_PORT"] == ranks[1]["MASTER_PORT"]
    assert all(r["LOWRANK_LAUNCHER"] == "slurm" and r["SLURM_JOB_ID"] == job and r["LOWRANK_RUN_ID"] == run_id
               and r["LOWRANK_PREEMPT_SIGNAL"] == "USR2" for r in ranks)
    assert "rank 0 of 2" in (run_dir / "output.log").read_text()
    assert "rank 1 of 2" in (run_dir / "output.rank1.log").read_text()


@pytest.mark.slow
def test_two_rank_ddp_job_matches_one_process(home, tmp_path, slurm_home):
    """The real worker as a 2-task Slurm job (gloo on the CPU, env:// rendezvous from the job's
    environment, no torchrun) ends with the 1-process run's metrics (train.sync_bn, global batch)."""
    env = slurm_home
    preset = write_preset(tmp_path, epochs=2, name="ddp")
    sync = ["--set", "train.sync_bn=true"]
    ddp = cli("run", str(preset), *sync, "--set", "resources.nproc=2", "--json", env=env)
    assert ddp.returncode == 0, ddp.stdout + ddp.stderr
    alone = cli("run", str(preset), *sync, "--backend", "local", "--cpu", "--json", env=env)
    assert alone.returncode == 0, alone.stdout + alone.stderr
    two, one = json.loads(ddp.stdout), json.loads(alone.stdout)
    assert two["state"] == one["state"] == "finished"
    for key in ("final_val_err1", "best_val_err1", "test_err1", "test_err5"):
        assert two[key] == pytest.approx(one[key], abs=1e-4), key
    recorded = status(home, two["run_id"])
    assert recorded["world_size"] == 2 and recorded["backend"] == "slurm" and len(recorded["rank_pids"]) == 2
    assert "backend" not in status(home, one["run_id"])  # the local one ran here
    events = [json.loads(line) for line in (home / "runs" / two["run_id"] / "metrics.jsonl").read_text().splitlines()]
    losses = [event["loss"] for event in events if event["event"] == "epoch"]
    alone_events = [json.loads(line) for line in (home / "runs" / one["run_id"] / "metrics.jsonl").read_text().splitlines()]
    assert losses == pytest.approx([event["loss"] for event in alone_events if event["event"] == "epoch"], abs=1e-4)
