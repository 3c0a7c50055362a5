"""Helpers for the TUI tests: run directories written the way the worker writes them (lowrank.rundir), for the TUI tests.

No training: each helper writes config.yaml, status.json, metrics.jsonl and output.log
with fixed numbers and timestamps, so screens are deterministic.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import psutil
import pytest

from console.gpus import GPUInfo, GPUProcess, HostInfo, HostSnapshot
from lowrank.rundir import RunDir

T0 = dt.datetime(2024, 3, 1, 12, 0, 0, tzinfo=dt.timezone.utc).timestamp()  # every run starts here
NOW = T0 + 3600.0  # the console's clock in tests: one hour later
PROVENANCE = {"command": "lowrank run presets/wrn.yaml", "cwd": "/home/me/study",
              "repo": {"root": "/home/me/study", "commit": "0123456789abcdef0123", "dirty": True},
              "lowrank": {"version": "0.1.0", "path": "/src/lowrank", "commit": "fedcba9876543210fedc", "dirty": False},
              "python": "3.11.7", "host": "testhost", "torch": "2.4.0", "cuda": "12.4", "cudnn": "9.1.0",
              "gpu_names": ["NVIDIA H200"], "worker_host": "testhost", "worker_python": "3.11.7"}  # fixed: snapshots


def iso(seconds: float) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.timezone.utc).isoformat(timespec="seconds")


def make_run(home: Path, run_id: str, *, state: str = "finished", name: str | None = None, model: str = "wrn",
             dataset: str = "cifar10", method: str = "separable", budget: float | None = 0.25, epochs: int = 10,
             epoch: int | None = None, params: int = 1_200_000, macs: int = 180_000_000, err: float = 8.0,
             sweep: str | None = None, seconds: float = 1800.0, proc: psutil.Process | None = None,
             host: str = "testhost", extra: dict[str, Any] | None = None) -> RunDir:
    """One run in ``state`` with ``epoch`` epochs of metrics (loss and error falling towards ``err``)."""
    name = name or run_id.split("-", 2)[-1].rsplit("-", 1)[0]
    config = {"name": name, "model": {"name": model, "kwargs": {"depth": 16}}, "data": {"name": dataset},
              "substitute": {"method": method, "budget": budget}, "train": {"epochs": epochs, "device": "cpu"}}
    run = RunDir.create(config, home=home, run_id=run_id, extra_status={"host": host, "provenance": PROVENANCE, **({"sweep": sweep} if sweep else {})})
    done = epochs if epoch is None and state == "finished" else (epoch or 0)
    for e in range(1, done + 1):
        loss = 2.0 * (err / 8.0) / e ** 0.5
        for b in (5, 10):
            run.append_metric({"event": "step", "epoch": e, "batch": b, "batches": 10, "split": "train",
                               "loss": loss * (1.1 - b / 100), "err1": err + 40 / e})
        run.append_metric({"event": "epoch", "epoch": e, "split": "train", "loss": loss, "err1": err + 40 / e})
        run.append_metric({"event": "eval", "epoch": e, "split": "val", "loss": loss * 1.2, "err1": err + 45 / e})
    status: dict[str, Any] = {"state": state, "epoch": done, "epochs": epochs, "started": iso(T0), "created": iso(T0),
                              "params": params, "macs": macs, "dense_params": 4 * params, "method": method,
                              "hp": 0.5}
    if done:
        status.update(last_loss=2.0 * (err / 8.0) / done ** 0.5, best_val_err1=err + 45 / done)
    if state in ("finished", "failed", "killed"):
        status["ended"] = iso(T0 + seconds)
    if state == "finished":
        status.update(test_err1=err, best_val_err1=err + 0.3, exit_code=0)
    if state == "failed":
        status.update(error="non-finite loss (nan) at epoch 3, step 120", exit_code=1)
    if state == "running":
        status.update(launcher_host=host, gpus=[0])
    if proc is not None:  # a live stand-in worker (its own session), which `k` may kill
        status.update(pid=proc.pid, pgid=proc.pid, sid=proc.pid, create_time=proc.create_time())
    status.update(extra or {})
    run.update_status(**status)
    run.file("output.log").write_text("".join(f"epoch {e}/{epochs} train loss {2.0 / e:.4f}\n"
                                              for e in range(1, done + 1)) or "starting\n")
    return run


def fake_snapshot() -> HostSnapshot:
    """Two GPUs and a fixed host: the GPU panel without NVML, identical on every machine."""
    host = HostInfo("testhost", 16, 23.5, (3.1, 2.9, 2.5), 48 * 1024.0, 128 * 1024.0)
    gpus = [GPUInfo(0, "NVIDIA A100-SXM4-40GB", "GPU-0", 20_480.0, 40_960.0, 87.0, 64.0, 250.0, 400.0,
                    [GPUProcess(4242, 20_000.0, None, "python")]),
            GPUInfo(1, "NVIDIA A100-SXM4-40GB", "GPU-1", 512.0, 40_960.0, 0.0, 35.0, 60.0, 400.0, [])]
    return HostSnapshot(time=NOW, host=host, gpus=gpus, driver_version="550.54")


def no_gpu_snapshot() -> HostSnapshot:
    host = HostInfo("testhost", 2, 5.0, (0.1, 0.1, 0.1), 1024.0, 4096.0)
    return HostSnapshot(time=NOW, host=host, gpus=[], nvml_error="NVML unavailable: library not found")


@pytest.fixture
def sleeper():
    """A stand-in worker process in its own session (what a "running" run's pid points at)."""
    procs: list[subprocess.Popen] = []

    def start(run_id: str) -> psutil.Process:
        # carrying the run's id, as every launcher starts a worker: only then is it the run's worker
        proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True,
                                env={**os.environ, "LOWRANK_RUN_ID": run_id})
        procs.append(proc)
        return psutil.Process(proc.pid)

    yield start
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


async def settle(pilot, predicate, timeout: float = 10.0, what: str = "condition") -> None:
    """Let the app run (workers, messages) until ``predicate()`` holds."""
    import asyncio

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await pilot.pause(0.05)
