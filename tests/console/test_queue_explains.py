"""The queue explains itself: a queued run says why it waits (a CPU slot, GPUs busy or short
of memory), and the CPU-slot limit is a documented setting, not only an environment variable."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from lowrank.rundir import RunDir

from console.gpus import GPUInfo, HostInfo, HostSnapshot
from console.placement import Job, Requirement, default_max_cpu_runs, plan
from console.scheduler import Scheduler, set_cpu_slots
from fake_worker import fake_config, wait_for


def snap(free_mb: list[float], cores: int = 8) -> HostSnapshot:
    host = HostInfo("h", cores, 1.0, (0.0, 0.0, 0.0), 1024.0, 4096.0)
    gpus = [GPUInfo(i, "GPU", f"GPU-{i}", 40_960.0 - free, 40_960.0, 0.0, 30.0, 50.0, 300.0, [])
            for i, free in enumerate(free_mb)]
    return HostSnapshot(time=0.0, host=host, gpus=gpus)


def test_plan_says_why_each_run_waits():
    reasons: dict[str, str] = {}
    running = [Job("r", Requirement(gpus=0), gpus=())]
    queued = [Job("cpu", Requirement(gpus=0)), Job("big", Requirement(1, min_free_memory_gb=10)),
              Job("pinned", Requirement(gpu_ids=(0,)))]
    held = [Job("holder", Requirement(1), gpus=(0,))]
    starts = plan(queued, running + held, snap([20_000.0, 4_096.0]), max_cpu_runs=1, reasons=reasons)
    assert starts == []
    assert reasons["cpu"].startswith("waiting for a CPU slot: 1/1 busy")
    assert reasons["big"].startswith("needs 1 GPU(s) with >= 10 GB free: 0 of 2 usable now")
    assert "GPU 0 held by 1 of our run(s)" in reasons["big"] and "GPU 1 has 4.0 GiB free" in reasons["big"]
    assert "GPU 0 held" in reasons["pinned"]


def test_cpu_slots_setting(home, monkeypatch):
    monkeypatch.delenv("LOWRANK_MAX_CPU_RUNS", raising=False)
    assert default_max_cpu_runs(8, home) == 4  # one per two cores
    path = set_cpu_slots(3, home)
    assert path == home / "config.yaml" and default_max_cpu_runs(8, home) == 3
    (home / "config.yaml").write_text("cpu_slots: [oops\n")  # broken: the default, never a crash
    assert default_max_cpu_runs(8, home) == 4
    monkeypatch.setenv("LOWRANK_MAX_CPU_RUNS", "2")  # the environment still wins (tests, one-off)
    assert default_max_cpu_runs(8, home) == 2


@pytest.mark.subprocess
def test_scheduler_start_cpu_slots_and_status(home, monkeypatch):
    from console.cli import app

    monkeypatch.delenv("LOWRANK_MAX_CPU_RUNS", raising=False)
    result = CliRunner().invoke(app, ["scheduler", "start", "--cpu-slots", "2"])
    assert result.exit_code == 0 and "cpu_slots: 2" in result.output
    shown = CliRunner().invoke(app, ["scheduler", "status"])
    assert "CPU slots: 2" in shown.output


@pytest.mark.slow
@pytest.mark.subprocess
def test_a_queued_run_says_it_waits_for_a_cpu_slot(fake, monkeypatch):
    """One CPU slot, one run holding it: the second run's status, ls and the console say why."""
    monkeypatch.setenv("LOWRANK_MAX_CPU_RUNS", "1")
    from console.cli import app

    first = RunDir.create(fake_config("first", epochs=400, step_seconds=0.05), home=fake)
    second = RunDir.create(fake_config("second", epochs=1), home=fake)
    for run in (first, second):
        run.update_status(requirement={"gpus": 0})
    scheduler = Scheduler(fake, poll=0.1)
    try:
        scheduler.step()
        wait_for(lambda: first.read_status()["state"] == "running", what="the first run")
        scheduler.step()
        waiting = second.read_status().get("waiting")
        assert waiting and waiting.startswith("waiting for a CPU slot: 1/1 busy"), second.read_status()
        listed = CliRunner().invoke(app, ["ls"])
        assert "waiting for a CPU slot" in listed.stderr
    finally:
        from console.launch import kill_run

        kill_run(first, grace=5)
    scheduler.step()
    wait_for(lambda: second.read_status()["state"] in ("running", "finished"), what="the second run to start")
    assert second.read_status().get("waiting") is None
