"""Shared by the Slurm tests: a tiny preset, the CLI in a subprocess, Slurm's own views of a job.

Every test submits to the real cluster that .ci/slurm_setup.sh starts (marker ``slurm``):
the job runs ``python -m lowrank.train`` from this checkout (PYTHONPATH is exported with
the job by sbatch and by the backend's sbatch setup lines).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]


def write_preset(tmp_path: Path, *, epochs: int = 2, num_train: int = 64, slurm: dict | None = None,
                 name: str = "slurmtest") -> Path:
    """tiny_convnet width 8 on synthetic 8x8 images, on the CPU, resources.backend: slurm."""
    preset = {"name": name, "model": {"name": "tiny_convnet", "kwargs": {"width": 8}},
              "data": {"name": "synthetic", "batch_size": 32,
                       "kwargs": {"image_size": 8, "num_train": num_train, "num_val": 32, "num_test": 32}},
              "train": {"epochs": epochs, "device": "cpu", "lr": 0.05},
              "log": {"checkpoint_every": 1, "step_every": 4},
              "resources": {"backend": "slurm"}, "slurm": {"time": 5, **(slurm or {})}}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(preset))
    return path


def slurm_env(home: Path) -> dict[str, str]:
    """The environment of the CLI (and so of the job): this checkout first, one thread, the real worker."""
    env = {key: value for key, value in os.environ.items() if key != "LOWRANK_WORKER"}
    env.update(LOWRANK_HOME=str(home), PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    return env


def cli(*args: str, env: dict[str, str], timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "console.cli", *args], capture_output=True, text=True,
                          cwd=REPO, timeout=timeout, env=env)


def ls_json(env: dict[str, str]) -> list[dict]:
    done = cli("ls", "--json", env=env)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def status(home: Path, run_id: str) -> dict:
    return json.loads((home / "runs" / run_id / "status.json").read_text())


def wait_state(env: dict[str, str], run_id: str, states: tuple[str, ...], timeout: float) -> dict:
    """Poll ``ls --json`` (which reconciles with Slurm) until the run is in one of ``states``."""
    deadline = time.monotonic() + timeout
    while True:
        rows = {row["run_id"]: row for row in ls_json(env)}
        row = rows.get(run_id, {})
        if row.get("state") in states:
            return row
        assert time.monotonic() < deadline, f"{run_id} still {row.get('state')} ({row.get('slurm_state')})"
        time.sleep(1.0)


def in_squeue(job_id: str) -> bool:
    """Whether Slurm still lists the job as pending/running (its default squeue states)."""
    out = subprocess.run(["squeue", "--noheader", "--array", "--format=%i"], capture_output=True, text=True,
                         check=True).stdout.split()
    return job_id in out


def sacct_states(job_id: str, timeout: float = 30) -> list[str]:
    """Every accounting record's State of the job (a requeued job has one per attempt with -D),
    once the last one has ended: slurmctld tells slurmdbd a moment after the job leaves squeue."""
    deadline = time.monotonic() + timeout
    while True:
        out = subprocess.run(["sacct", "--noheader", "--parsable2", "--allocations", "--duplicates", "--jobs", job_id,
                              "--format=JobID,State"], capture_output=True, text=True, check=True).stdout
        states = [line.split("|")[1].split()[0] for line in out.splitlines() if line.split("|")[0] == job_id]
        if (states and states[-1] not in ("PENDING", "RUNNING", "REQUEUED", "COMPLETING")) \
                or time.monotonic() > deadline:
            return states
        time.sleep(0.5)


def cancel_leftovers(home: Path) -> list[str]:
    """scancel every job of this home's runs that Slurm still lists (a failed test leaves none behind)."""
    jobs = []
    for path in sorted((home / "runs").glob("*/status.json")):
        job = json.loads(path.read_text()).get("slurm_job_id")
        if job and in_squeue(str(job)):
            jobs.append(str(job))
    if jobs:
        subprocess.run(["scancel", *jobs], check=False)
    return jobs


def wait_left_queue(job_id: str, timeout: float = 60) -> None:
    """Wait until Slurm no longer lists the job (the worker's final state lands a moment before)."""
    deadline = time.monotonic() + timeout
    while in_squeue(job_id):
        assert time.monotonic() < deadline, f"Slurm job {job_id} still listed after {timeout:g} s"
        time.sleep(0.5)
