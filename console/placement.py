"""Where a run may start: resource requirements and the pure placement decision.

:func:`plan` is pure -- (queued jobs, running jobs, host snapshot) -> which runs start on
which GPUs -- so tests simulate 0..8 GPUs. Both the scheduler (for the queue) and the
local backend (for a run started directly, ``lowrank run`` without ``--detach``) ask it.

Requirement (the ``resources:`` section of an experiment, or ``lowrank run`` flags)::

    resources:
      gpus: 1                 # GPUs the run needs; 0 = CPU. Default: 1 on a GPU host, else CPU
      min_free_memory_gb: 0   # each assigned GPU must have this much memory free
      share: false            # may share a GPU with our other runs that also allow sharing
      gpu_ids: null           # pin to these GPU indices (NVML / nvidia-smi numbering)
      nproc: 1                # data-parallel ranks: on a GPU host one GPU per rank (gpus defaults to nproc)
      backend: local          # where the worker runs (console.backends); not a placement key, ignored here

Rules: a GPU held by one of our runs is never assigned again unless both runs allow
sharing; processes that are not ours count only through the free-memory check; queued
runs are considered oldest first, and a later run may start when an earlier one does
not fit (greedy backfill: a 4-GPU run can wait behind 1-GPU runs). At most
``max_cpu_runs`` CPU runs go at once: default one per two cores, because each CPU run
is a multi-threaded torch process (given ``OMP_NUM_THREADS=2``), and more runs than
that only slow each other down.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

from lowrank.errors import UserError
from lowrank.rundir import RunDir, now_iso

from console.gpus import HostSnapshot
from console.runs import parse_time

RESOURCE_KEYS = ("gpus", "min_free_memory_gb", "share", "gpu_ids")
# resources keys that say how the worker runs, not where: accepted here, used by the backends
# (nproc also sets how many GPUs a run needs: one per rank)
WORKER_KEYS = ("nproc", "backend")
MAX_CPU_RUNS_ENV = "LOWRANK_MAX_CPU_RUNS"


# ---------------------------------------------------------------- requirements


@dataclasses.dataclass(frozen=True)
class Requirement:
    """What a run needs to start. ``gpus=None``: ``nproc`` GPUs (one per rank) if the host has
    any, else the CPU. A data-parallel CPU run (``gpus=0``, ``nproc > 1``) is one CPU run."""

    gpus: int | None = None
    min_free_memory_gb: float = 0.0
    share: bool = False
    gpu_ids: tuple[int, ...] | None = None
    nproc: int = 1

    def __post_init__(self) -> None:
        if self.gpus is not None and self.gpus < 0:
            raise ValueError("gpus must be >= 0")
        if self.nproc < 1:
            raise ValueError("nproc must be >= 1")
        if self.min_free_memory_gb < 0:
            raise ValueError("min_free_memory_gb must be >= 0")
        if self.gpu_ids is not None:
            ids = tuple(int(index) for index in self.gpu_ids)
            if len(set(ids)) != len(ids) or not ids:
                raise ValueError("gpu_ids must be distinct and non-empty")
            object.__setattr__(self, "gpu_ids", ids)
            if self.gpus is None:
                object.__setattr__(self, "gpus", len(ids))
            elif self.gpus != len(ids):
                raise ValueError(f"gpus={self.gpus} but gpu_ids names {len(ids)} GPU(s)")
        if self.nproc > 1 and self.gpus not in (None, 0, self.nproc):
            raise ValueError(f"nproc={self.nproc} ranks take one GPU each, but gpus={self.gpus} "
                             f"(give {self.nproc} GPUs, or 0 for gloo ranks on the CPU)")

    def count(self, host_has_gpus: bool) -> int:
        """How many GPUs on a host with / without GPUs (0 = a CPU run)."""
        return (self.nproc if host_has_gpus else 0) if self.gpus is None else self.gpus

    def describe(self) -> str:
        if self.gpus == 0:
            return "CPU" if self.nproc == 1 else f"CPU, {self.nproc} processes"
        if self.gpus is None:
            what = "a GPU if any, else CPU" if self.nproc == 1 else f"{self.nproc} GPUs if any, else CPU"
        else:
            what = f"{self.gpus} GPU(s)"
        if self.gpu_ids:
            what = f"GPU(s) {','.join(map(str, self.gpu_ids))}"
        if self.min_free_memory_gb:
            what += f" with >= {self.min_free_memory_gb:g} GB free"
        return what + (", shared" if self.share else "")

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["gpu_ids"] = list(self.gpu_ids) if self.gpu_ids else None
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | str | None, *, key: str = "resources") -> "Requirement":
        """From a ``resources`` mapping (or the string ``"cpu"``); bad input is a UserError."""
        if data is None:
            return cls()
        if data == "cpu":
            return cls(gpus=0)
        if not isinstance(data, Mapping):
            raise UserError(f"expected a mapping with keys {', '.join(RESOURCE_KEYS)} or 'cpu'", key=key)
        unknown = sorted(set(data) - set(RESOURCE_KEYS) - set(WORKER_KEYS))
        if unknown:
            raise UserError("unknown key", key=f"{key}.{unknown[0]}",
                            hint=f"known keys: {', '.join(RESOURCE_KEYS + WORKER_KEYS)}")
        try:
            ids = data.get("gpu_ids")
            return cls(gpus=None if data.get("gpus") is None else int(data["gpus"]),
                       min_free_memory_gb=float(data.get("min_free_memory_gb") or 0.0),
                       share=bool(data.get("share", False)),
                       gpu_ids=tuple(ids) if ids is not None else None,
                       nproc=int(data.get("nproc") or 1))
        except (TypeError, ValueError) as error:
            raise UserError(str(error), key=key) from None


def requirement_from_config(config: Mapping[str, Any]) -> Requirement:
    """The requirement a config states: its ``resources`` section, forced to CPU when
    ``train.device`` is ``cpu``."""
    requirement = Requirement.from_dict(config.get("resources"))
    device = str((config.get("train") or {}).get("device", "auto"))
    if device == "cpu":
        return dataclasses.replace(requirement, gpus=0, gpu_ids=None)
    if device.startswith("cuda") and requirement.gpus == 0:
        raise UserError("train.device asks for CUDA but resources.gpus is 0", key="resources.gpus",
                        hint="set train.device: cpu, or resources.gpus >= 1")
    return requirement


def requirement_from_cli(*, gpus: int | None = None, gpu: Sequence[int] | None = None,
                         cpu: bool = False) -> dict[str, Any]:
    """Overrides from ``lowrank run`` flags -- only what the user set -- for :func:`submit`."""
    overrides: dict[str, Any] = {}
    if cpu:
        overrides.update(gpus=0, gpu_ids=None)
    if gpus is not None:
        overrides.update(gpus=gpus, gpu_ids=None)
    if gpu:
        overrides.update(gpus=len(gpu), gpu_ids=list(gpu))
    return overrides


def resolve_requirement(config: Mapping[str, Any],
                        requirement: Requirement | Mapping[str, Any] | None = None) -> Requirement:
    """A full requirement: given whole, or the config's with ``requirement`` overrides applied."""
    if isinstance(requirement, Requirement):
        return requirement
    base = dict(config.get("resources") or {}) if isinstance(config.get("resources"), Mapping) else {}
    if config.get("resources") == "cpu":
        base = {"gpus": 0}
    base.update(requirement or {})
    device = str((config.get("train") or {}).get("device", "auto"))
    if device == "cpu" and base.get("gpus") not in (None, 0):
        raise UserError(f"the run asks for {base['gpus']} GPU(s) but train.device is cpu", key="train.device",
                        hint="--set train.device=auto (or cuda)")
    return requirement_from_config({**config, "resources": base})


def requirement_for(run: RunDir) -> Requirement:
    """The run's requirement: recorded at submit time, else from its config."""
    recorded = run.read_status().get("requirement")
    if recorded:
        return Requirement.from_dict(recorded, key="status.requirement")
    return requirement_from_config(run.read_config())


# ---------------------------------------------------------------- the pure decision


@dataclasses.dataclass(frozen=True)
class Job:
    """A run as the planner sees it: its requirement, and the GPUs it holds if running."""

    run_id: str
    requirement: Requirement
    gpus: tuple[int, ...] | None = None  # running: indices it holds (empty = CPU; None = unknown)
    order: float = 0.0  # queued: submit time, oldest first


HOME_SETTINGS = "config.yaml"  # $LOWRANK_HOME/config.yaml: settings of this home's queue


def home_settings(home: Path | None) -> dict[str, Any]:
    """``$LOWRANK_HOME/config.yaml`` as a dict ({} when absent or unreadable: the defaults apply)."""
    if home is None:
        return {}
    import yaml

    from lowrank import safe_yaml

    try:
        data = safe_yaml.load((Path(home) / HOME_SETTINGS).read_text(encoding="utf-8"))
    except (OSError, ValueError, yaml.YAMLError, RecursionError):  # absent or broken: the defaults apply
        return {}
    return data if isinstance(data, dict) else {}


def default_max_cpu_runs(cpu_count: int, home: Path | None = None) -> int:
    """How many CPU runs may run at once: ``$LOWRANK_MAX_CPU_RUNS``, else ``cpu_slots`` in
    ``$LOWRANK_HOME/config.yaml`` (``lowrank scheduler start --cpu-slots N`` writes it),
    else one CPU run per two cores (at least one)."""
    env = os.environ.get(MAX_CPU_RUNS_ENV)
    if env:
        return max(1, int(env))
    slots = home_settings(home).get("cpu_slots")
    if isinstance(slots, int) and not isinstance(slots, bool) and slots >= 1:
        return slots
    return max(1, cpu_count // 2)


def _gpu_details(indices, holders, gpus, reserved_mb, want_mb, need) -> str:
    """Why each GPU in ``indices`` cannot take the run now."""
    parts = []
    for index in indices:
        if index not in gpus:
            parts.append(f"GPU {index} absent")
        elif holders[index] and not (need.share and all(other.share for other in holders[index])):
            parts.append(f"GPU {index} held by {len(holders[index])} of our run(s)")
        elif gpus[index].memory_free_mb - reserved_mb[index] < want_mb:
            free = (gpus[index].memory_free_mb - reserved_mb[index]) / 1024
            parts.append(f"GPU {index} has {free:.1f} GiB free")
    return ", ".join(parts)


def plan(queued: Sequence[Job], running: Sequence[Job], snapshot: HostSnapshot, *,
         max_cpu_runs: int | None = None, reasons: dict[str, str] | None = None) -> list[tuple[str, list[int]]]:
    """Which queued runs start now, and on which GPUs (``[]`` = CPU).

    Pure: reads only its arguments. Never assigns a GPU held by one of our runs (running
    or started in this same plan) unless every run on it allows sharing; honours each
    run's free-memory minimum (minus memory promised this round) and pinned ids; starts
    at most ``max_cpu_runs`` CPU runs in all. Picks the least-loaded, most-free GPUs.
    ``reasons``, when given, receives why each queued run that does not start waits.
    """
    reasons = {} if reasons is None else reasons
    if max_cpu_runs is None:
        max_cpu_runs = default_max_cpu_runs(snapshot.host.cpu_count)
    has_gpus = snapshot.has_gpus
    gpus = {gpu.index: gpu for gpu in snapshot.gpus}
    holders: dict[int, list[Requirement]] = {index: [] for index in gpus}
    reserved_mb: dict[int, float] = {index: 0.0 for index in gpus}
    cpu_runs = 0
    for job in running:
        held = job.gpus
        if held is None:  # unknown placement: assume what its requirement implies on this host
            held = () if job.requirement.count(has_gpus) == 0 else None
        if held == ():
            cpu_runs += 1
        for index in held or ():
            if index in holders:
                holders[index].append(job.requirement)

    starts: list[tuple[str, list[int]]] = []
    for job in sorted(queued, key=lambda item: (item.order, item.run_id)):
        need = job.requirement
        count = need.count(has_gpus)
        if count == 0:
            if cpu_runs < max_cpu_runs:
                starts.append((job.run_id, []))
                cpu_runs += 1
            else:
                reasons[job.run_id] = (f"waiting for a CPU slot: {cpu_runs}/{max_cpu_runs} busy "
                                       f"(lowrank scheduler start --cpu-slots N)")
            continue
        want_mb = need.min_free_memory_gb * 1024

        def usable(index: int) -> bool:
            others = holders[index]
            if others and not (need.share and all(other.share for other in others)):
                return False
            return gpus[index].memory_free_mb - reserved_mb[index] >= want_mb

        pool = need.gpu_ids if need.gpu_ids is not None else tuple(gpus)
        candidates = [index for index in pool if index in gpus and usable(index)]
        if (need.gpu_ids is not None and len(candidates) < len(need.gpu_ids)) or len(candidates) < count:
            blocked = [index for index in pool if index not in candidates]
            reasons[job.run_id] = (f"needs {need.describe()}: {len(candidates)} of {len(pool)} usable now ("
                                   f"{_gpu_details(blocked, holders, gpus, reserved_mb, want_mb, need)})")
            continue
        candidates.sort(key=lambda index: (len(holders[index]), -(gpus[index].memory_free_mb - reserved_mb[index]),
                                           index))
        chosen = sorted(candidates[:count])
        for index in chosen:
            holders[index].append(need)
            reserved_mb[index] += want_mb
        starts.append((job.run_id, chosen))
    return starts


def impossible(job: Job, snapshot: HostSnapshot) -> str | None:
    """Why ``job`` can never start on this host (None when it could, given time)."""
    need = job.requirement
    count = need.count(snapshot.has_gpus)
    if count == 0:
        return None
    if not snapshot.has_gpus:
        return f"needs {need.describe()} but this host has no usable GPU ({snapshot.nvml_error})"
    indices = {gpu.index for gpu in snapshot.gpus}
    if need.gpu_ids is not None and not set(need.gpu_ids) <= indices:
        return f"needs GPU(s) {sorted(set(need.gpu_ids) - indices)} but this host has {sorted(indices)}"
    if count > len(indices):
        return f"needs {count} GPUs but this host has {len(indices)}"
    fitting = [gpu for gpu in snapshot.gpus if gpu.memory_total_mb >= need.min_free_memory_gb * 1024]
    if len(fitting) < count:
        return f"needs {count} GPU(s) with {need.min_free_memory_gb:g} GB free; only {len(fitting)} have that much memory"
    return None


# ---------------------------------------------------------------- jobs from the run store


def _local(status: Mapping[str, Any]) -> bool:
    """A run of this host's queue: its status names no backend, or ``local``."""
    return (status.get("backend") or "local") == "local"


def running_jobs(store) -> list[Job]:
    """Running runs of ``store`` with the GPUs they hold."""
    jobs = []
    for run, status in store.statuses():
        if status.get("state") != "running" or not _local(status):
            continue
        with contextlib.suppress(UserError):
            held = status.get("gpus")
            jobs.append(Job(run.run_id, requirement_for(run), tuple(held) if held is not None else None))
    return jobs


def queued_jobs(store) -> list[tuple[Job, dict[str, Any]]]:
    """Queued runs of ``store`` (with their status), oldest submission first."""
    jobs = []
    for run, status in store.statuses():
        if status.get("state") != "queued" or status.get("pid") or not _local(status):
            continue  # another backend's run waits in that backend's queue (a Slurm job), not ours
        try:
            requirement = requirement_for(run)
        except UserError as error:
            run.update_status(state="failed", ended=now_iso(), error=f"bad resource requirement: {error}")
            continue
        order = parse_time(status.get("submitted") or status.get("created")) or 0.0
        jobs.append((Job(run.run_id, requirement, order=order), status))
    return jobs
