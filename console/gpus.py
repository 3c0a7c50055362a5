"""A snapshot of the host: each GPU (through NVML) and the CPU/memory load (through psutil).

"No driver", "no NVML library" and "no GPU" are normal states: :func:`snapshot` then
returns ``gpus=[]`` with ``nvml_error`` saying why, and never raises. GPU processes are
mapped to our runs by pid: a run owns its worker's pid, its process group and its
descendants (DataLoader workers allocate CUDA memory too when they pin).

pynvml (the ``nvidia-ml-py`` package) is imported lazily so the CLI starts fast and a
missing package is just another "no NVML" state.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

import psutil

MIB = 1024 * 1024


@dataclass
class GPUProcess:
    """A process holding memory on a GPU; ``run_id`` is set when it belongs to one of our runs."""

    pid: int
    used_memory_mb: float | None
    run_id: str | None = None
    name: str | None = None


@dataclass
class GPUInfo:
    """One GPU as NVML reports it (a field NVML cannot read on this board is None)."""

    index: int
    name: str
    uuid: str | None
    memory_used_mb: float
    memory_total_mb: float
    utilization_pct: float | None = None
    temperature_c: float | None = None
    power_w: float | None = None
    power_limit_w: float | None = None
    processes: list[GPUProcess] = field(default_factory=list)

    @property
    def memory_free_mb(self) -> float:
        return max(0.0, self.memory_total_mb - self.memory_used_mb)

    @property
    def run_ids(self) -> set[str]:
        """Our runs with a process on this GPU."""
        return {proc.run_id for proc in self.processes if proc.run_id}


@dataclass
class HostInfo:
    """CPU and memory load of this machine."""

    hostname: str
    cpu_count: int
    cpu_percent: float
    load_avg: tuple[float, float, float]
    memory_used_mb: float
    memory_total_mb: float


@dataclass
class HostSnapshot:
    """Everything :func:`snapshot` saw at ``time``: host load and the GPUs (possibly none)."""

    time: float
    host: HostInfo
    gpus: list[GPUInfo] = field(default_factory=list)
    nvml_error: str | None = None  # why there are no GPUs (no library, no driver, ...); None when NVML works
    driver_version: str | None = None

    @property
    def has_gpus(self) -> bool:
        return bool(self.gpus)

    def gpu(self, index: int) -> GPUInfo | None:
        return next((gpu for gpu in self.gpus if gpu.index == index), None)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (``lowrank gpus --json``), with derived free memory per GPU."""
        data = asdict(self)
        for gpu, out in zip(self.gpus, data["gpus"]):
            out["memory_free_mb"] = gpu.memory_free_mb
        data["gpu_count"] = len(self.gpus)
        return data


# ---------------------------------------------------------------- host


def host_info(cpu_interval: float | None = None) -> HostInfo:
    """CPU % (over ``cpu_interval`` seconds; None = since the previous call), load, memory."""
    memory = psutil.virtual_memory()
    try:
        load = tuple(round(value, 2) for value in os.getloadavg())
    except OSError:  # not available on this platform
        load = (0.0, 0.0, 0.0)
    return HostInfo(hostname=socket.gethostname(), cpu_count=psutil.cpu_count() or 1,
                    cpu_percent=psutil.cpu_percent(interval=cpu_interval), load_avg=load,  # type: ignore[arg-type]
                    memory_used_mb=(memory.total - memory.available) / MIB, memory_total_mb=memory.total / MIB)


# ---------------------------------------------------------------- NVML

_nvml_lock = threading.Lock()
_nvml: Any = None  # the pynvml module once nvmlInit succeeded


def _init_nvml() -> tuple[Any, str | None]:
    """Import pynvml and initialise NVML once; returns (module or None, reason when None)."""
    global _nvml
    with _nvml_lock:
        if _nvml is not None:
            return _nvml, None
        try:
            import pynvml
        except ImportError as error:
            return None, f"pynvml is not installed ({error}); install nvidia-ml-py"
        try:
            pynvml.nvmlInit()
        except Exception as error:  # NVMLError_LibraryNotFound, DriverNotLoaded, ...
            return None, f"NVML unavailable: {_nvml_text(error)} (no NVIDIA driver on this machine?)"
        _nvml = pynvml
        return _nvml, None


def _nvml_text(error: Exception) -> str:
    text = str(error) or type(error).__name__
    return text.decode() if isinstance(text, bytes) else text


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _maybe(read, scale: float = 1.0) -> float | None:
    """One NVML reading, or None where the board does not support it."""
    try:
        return float(read()) * scale
    except Exception:
        return None


def read_gpus(pid_to_run: Mapping[int, str] | None = None) -> tuple[list[GPUInfo], str | None, str | None]:
    """All GPUs NVML sees, with their processes mapped to run ids: (gpus, nvml_error, driver)."""
    nvml, reason = _init_nvml()
    if nvml is None:
        return [], reason, None
    pid_to_run = pid_to_run or {}
    try:
        count = nvml.nvmlDeviceGetCount()
        driver = _text(nvml.nvmlSystemGetDriverVersion())
    except Exception as error:
        return [], f"NVML error: {_nvml_text(error)}", None
    if count == 0:
        return [], "NVML works but reports no GPU", driver
    gpus = []
    for index in range(count):
        try:
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            memory = nvml.nvmlDeviceGetMemoryInfo(handle)
            gpu = GPUInfo(index=index, name=_text(nvml.nvmlDeviceGetName(handle)),
                          uuid=_text(nvml.nvmlDeviceGetUUID(handle)),
                          memory_used_mb=memory.used / MIB, memory_total_mb=memory.total / MIB)
        except Exception as error:  # a GPU that fell off the bus must not hide the others
            gpus.append(GPUInfo(index=index, name=f"unreadable ({_nvml_text(error)})", uuid=None,
                                memory_used_mb=0.0, memory_total_mb=0.0))
            continue
        gpu.utilization_pct = _maybe(lambda: nvml.nvmlDeviceGetUtilizationRates(handle).gpu)
        gpu.temperature_c = _maybe(lambda: nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU))
        gpu.power_w = _maybe(lambda: nvml.nvmlDeviceGetPowerUsage(handle), 1e-3)  # milliwatts
        gpu.power_limit_w = _maybe(lambda: nvml.nvmlDeviceGetEnforcedPowerLimit(handle), 1e-3)
        gpu.processes = _gpu_processes(nvml, handle, pid_to_run)
        gpus.append(gpu)
    return gpus, None, driver


def _gpu_processes(nvml: Any, handle: Any, pid_to_run: Mapping[int, str]) -> list[GPUProcess]:
    seen: dict[int, GPUProcess] = {}
    for getter in ("nvmlDeviceGetComputeRunningProcesses", "nvmlDeviceGetGraphicsRunningProcesses"):
        try:
            infos = getattr(nvml, getter)(handle)
        except Exception:
            continue
        for info in infos:
            used = getattr(info, "usedGpuMemory", None)
            # NVML reports "not available" (e.g. without permission) as a huge sentinel or None
            used_mb = used / MIB if isinstance(used, int) and 0 <= used < 1 << 50 else None
            if info.pid in seen:
                continue
            seen[info.pid] = GPUProcess(pid=info.pid, used_memory_mb=used_mb, run_id=pid_to_run.get(info.pid),
                                        name=_process_name(info.pid))
    return sorted(seen.values(), key=lambda proc: proc.pid)


def _process_name(pid: int) -> str | None:
    # In a container NVML may report host pids that are not visible here: name stays None.
    try:
        return psutil.Process(pid).name()
    except (psutil.Error, OSError):
        return None


# ---------------------------------------------------------------- snapshot


def snapshot(pid_to_run: Mapping[int, str] | None = None, *, home=None,
             cpu_interval: float | None = None) -> HostSnapshot:
    """Host load and every GPU with its processes; never raises for a missing GPU stack.

    ``pid_to_run`` maps pids to run ids; when omitted it is built from the running runs
    under ``home`` (see :func:`console.runs.RunStore.pid_map`).
    """
    if pid_to_run is None:
        try:
            from console.runs import RunStore

            pid_to_run = RunStore(home).pid_map()
        except Exception:  # a snapshot must not fail because a run directory is odd
            pid_to_run = {}
    gpus, error, driver = read_gpus(pid_to_run)
    return HostSnapshot(time=time.time(), host=host_info(cpu_interval), gpus=gpus, nvml_error=error,
                        driver_version=driver)


def gpu_pids(snapshot_: HostSnapshot) -> dict[int, list[int]]:
    """pid -> indices of the GPUs it holds memory on."""
    found: dict[int, list[int]] = {}
    for gpu in snapshot_.gpus:
        for proc in gpu.processes:
            found.setdefault(proc.pid, []).append(gpu.index)
    return found
