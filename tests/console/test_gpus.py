"""Host snapshot: no GPU is a normal state; NVML readings and pid -> run mapping."""

from __future__ import annotations

import json
import os
import sys
import types

import pytest

from console import gpus as gpus_mod
from console.gpus import snapshot


@pytest.fixture
def fresh_nvml(monkeypatch):
    """Forget any initialised NVML so each test decides what pynvml is."""
    monkeypatch.setattr(gpus_mod, "_nvml", None)


def meminfo_total_mb() -> float:
    with open("/proc/meminfo") as handle:
        for line in handle:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024  # kB -> MiB
    raise AssertionError("no MemTotal")


def test_snapshot_on_this_host_never_raises(fresh_nvml, home):
    snap = snapshot(cpu_interval=0.05)
    assert snap.host.cpu_count == os.cpu_count()
    assert snap.host.memory_total_mb == pytest.approx(meminfo_total_mb(), rel=1e-3)
    assert 0.0 <= snap.host.cpu_percent <= 100.0
    assert len(snap.host.load_avg) == 3
    if not snap.gpus:  # this CI box: no driver, so a reason instead of GPUs
        assert snap.nvml_error and isinstance(snap.nvml_error, str)
    data = json.loads(json.dumps(snap.to_dict()))
    assert data["gpu_count"] == len(snap.gpus)


def test_missing_pynvml_is_a_state(fresh_nvml, monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml -> ImportError
    snap = snapshot(pid_to_run={})
    assert snap.gpus == [] and "pynvml is not installed" in snap.nvml_error


class NVMLError(Exception):
    pass


def fake_pynvml(devices: list[dict], init_error: Exception | None = None) -> types.ModuleType:
    """A module with pynvml's API over ``devices`` (this machine has no GPU to read)."""
    nvml = types.ModuleType("pynvml")
    nvml.NVML_TEMPERATURE_GPU = 0

    def init():
        if init_error:
            raise init_error

    def need(device, key):
        if device.get(key) is None:
            raise NVMLError("Not Supported")
        return device[key]

    nvml.nvmlInit = init
    nvml.nvmlDeviceGetCount = lambda: len(devices)
    nvml.nvmlSystemGetDriverVersion = lambda: b"550.54"
    nvml.nvmlDeviceGetHandleByIndex = lambda i: devices[i]
    nvml.nvmlDeviceGetName = lambda d: d["name"]
    nvml.nvmlDeviceGetUUID = lambda d: f"GPU-{d['name']}"
    nvml.nvmlDeviceGetMemoryInfo = lambda d: types.SimpleNamespace(used=d["used"], total=d["total"], free=0)
    nvml.nvmlDeviceGetUtilizationRates = lambda d: types.SimpleNamespace(gpu=need(d, "util"), memory=0)
    nvml.nvmlDeviceGetTemperature = lambda d, sensor: need(d, "temp")
    nvml.nvmlDeviceGetPowerUsage = lambda d: need(d, "power_mw")
    nvml.nvmlDeviceGetEnforcedPowerLimit = lambda d: need(d, "limit_mw")
    nvml.nvmlDeviceGetComputeRunningProcesses = lambda d: [types.SimpleNamespace(pid=p, usedGpuMemory=m)
                                                           for p, m in d["procs"]]
    nvml.nvmlDeviceGetGraphicsRunningProcesses = lambda d: []
    return nvml


def test_nvml_readings_units_and_run_mapping(fresh_nvml, monkeypatch):
    mib = 1024 * 1024
    devices = [
        {"name": b"H100", "used": 10 * 1024 * mib, "total": 80 * 1024 * mib, "util": 93, "temp": 61,
         "power_mw": 350_500, "limit_mw": 700_000, "procs": [(os.getpid(), 2048 * mib), (999_999_999, None)]},
        {"name": "A100", "used": 0, "total": 40 * 1024 * mib, "util": None, "temp": None, "power_mw": None,
         "limit_mw": None, "procs": []},
    ]
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml(devices))
    snap = snapshot(pid_to_run={os.getpid(): "run-x"})
    assert snap.nvml_error is None and snap.driver_version == "550.54"
    first, second = snap.gpus
    assert (first.index, first.name, first.memory_used_mb, first.memory_total_mb) == (0, "H100", 10240, 81920)
    assert first.memory_free_mb == 71680 and first.utilization_pct == 93 and first.temperature_c == 61
    assert first.power_w == pytest.approx(350.5) and first.power_limit_w == pytest.approx(700.0)
    ours, stranger = first.processes
    assert (ours.pid, ours.used_memory_mb, ours.run_id) == (os.getpid(), 2048, "run-x")
    assert stranger.run_id is None and stranger.used_memory_mb is None and stranger.name is None
    assert first.run_ids == {"run-x"}
    # unsupported readings are None, not errors
    assert second.utilization_pct is None and second.power_w is None and second.processes == []
    assert gpus_mod.gpu_pids(snap) == {os.getpid(): [0], 999_999_999: [0]}


def test_nvml_init_failure_is_a_state(fresh_nvml, monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml([], init_error=NVMLError("Driver Not Loaded")))
    snap = snapshot(pid_to_run={})
    assert snap.gpus == [] and "Driver Not Loaded" in snap.nvml_error


@pytest.mark.subprocess
def test_console_modules_do_not_import_torch():
    import subprocess

    code = ("import sys, console.gpus, console.runs, console.launch, console.scheduler, console.plotting;"
            "import console.commands.ls, console.commands.kill, console.commands.gpus, console.commands.plot;"
            "import console.commands.logs, console.commands.relaunch, console.commands.scheduler;"
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
