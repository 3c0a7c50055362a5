"""The console's incremental readers of ``$LOWRANK_HOME`` (run in thread workers, never on the UI thread).

:class:`RunWatcher` re-reads a run's status.json only when its mtime or size changed and
its config.yaml once, so a second's poll of 200 runs costs 200 ``stat`` calls.
:class:`MetricsCache` tails metrics.jsonl by byte offset (:class:`console.runs.MetricsTail`)
and keeps the curves of the runs on screen; :func:`log_tail` reads only the end of
output.log. :func:`gpu_runs` says which of our runs sits on each GPU; :class:`HostReader` takes GPU/host snapshots.
"""

from __future__ import annotations

import os
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from lowrank.rundir import FINAL_STATES, LOG_FILE, METRICS_FILE, STATUS_FILE, RunDir, runs_root

from console.plotting import curves
from console.runs import MetricsTail, RunInfo, read_config, reconcile, run_info

from .format import row_cells

Series = dict[str, tuple[list[float], list[float]]]
CURVE_METRICS = ("loss", "err1")


@dataclass
class RunRecord:
    """One run as the console knows it: summary, raw status and config, formatted row."""

    info: RunInfo
    status: dict[str, Any]
    config: dict[str, Any]
    cells: tuple[str, ...]

    @property
    def run_id(self) -> str:
        return self.info.run_id


@dataclass
class _Entry:
    stamp: tuple[int, int]
    status: dict[str, Any]
    config: dict[str, Any]
    record: RunRecord | None = None


class RunWatcher:
    """Every run under ``home``, re-read only where status.json changed."""

    def __init__(self, home: Path, clock: Callable[[], float] = time.time, reconcile_every: float = 5.0) -> None:
        self.home = Path(home)
        self.clock = clock
        self.reconcile_every = reconcile_every
        self._entries: dict[str, _Entry] = {}
        self._last_reconcile = 0.0

    def scan(self) -> dict[str, RunRecord]:
        """All runs now (sorted by id); cheap when little changed."""
        root = runs_root(self.home)
        seen: dict[str, _Entry] = {}
        now = self.clock()
        check = time.monotonic() - self._last_reconcile >= self.reconcile_every
        if check:
            self._last_reconcile = time.monotonic()
        try:
            dirs = sorted(entry.name for entry in os.scandir(root) if entry.is_dir())
        except FileNotFoundError:
            dirs = []
        for run_id in dirs:
            path = root / run_id
            try:
                stat = os.stat(path / STATUS_FILE)
            except FileNotFoundError:
                continue  # being created, or not a run
            stamp = (stat.st_mtime_ns, stat.st_size)
            entry = self._entries.get(run_id)
            if entry is None or entry.stamp != stamp:
                status = RunDir(path).read_status()  # checked: a corrupt file reads as state "unreadable"
                if not status:
                    if entry is None:
                        continue  # mid-replace: keep what we had, look again next time
                    status = entry.status
                config = entry.config if entry is not None else read_config(RunDir(path))
                entry = _Entry(stamp, status, config)
                check_this = True
            else:
                check_this = check
            if check_this and entry.status.get("state") == "running":
                entry.status = reconcile(RunDir(path), entry.status)  # worker gone without a final state?
            if entry.record is None or entry.status.get("state") not in FINAL_STATES:
                info = run_info(RunDir(path), entry.status, entry.config, now)  # elapsed/ETA move on
                entry.record = RunRecord(info, entry.status, entry.config, row_cells(info))
            seen[run_id] = entry
        self._entries = seen
        return {run_id: entry.record for run_id, entry in seen.items() if entry.record is not None}


@dataclass
class _Curves:
    tail: MetricsTail
    records: list[dict[str, Any]] = field(default_factory=list)
    series: dict[str, Series] = field(default_factory=dict)
    version: int = 0


class MetricsCache:
    """Curves of the runs the user looks at, kept up to date by reading only new bytes."""

    EVENTS = ("step", "epoch", "eval")

    def __init__(self, home: Path, limit: int = 32) -> None:
        self.home = Path(home)
        self.limit = limit
        self._entries: OrderedDict[str, _Curves] = OrderedDict()

    def get(self, run_id: str) -> tuple[dict[str, Series], int]:
        """``({"loss": series, "err1": series}, version)``; version grows when data arrived."""
        entry = self._entries.pop(run_id, None)
        if entry is None:
            entry = _Curves(MetricsTail(runs_root(self.home) / run_id / METRICS_FILE))
        self._entries[run_id] = entry
        while len(self._entries) > self.limit:
            self._entries.popitem(last=False)
        try:
            if os.stat(entry.tail.path).st_size < entry.tail.offset:
                entry.records = []  # the file was replaced: the tail starts over, so do we
        except FileNotFoundError:
            pass
        new = entry.tail.read()
        if new:
            entry.records.extend(record for record in new if record.get("event") in self.EVENTS)
            entry.series = {metric: curves(entry.records, metric) for metric in CURVE_METRICS}
            entry.version += 1
        return entry.series, entry.version


def log_tail(path: Path, lines: int = 200, max_bytes: int = 64 * 1024) -> list[str]:
    """The last ``lines`` lines of a log file, reading at most ``max_bytes`` from its end."""
    try:
        with open(path, "rb") as handle:
            size = handle.seek(0, 2)
            handle.seek(max(0, size - max_bytes))
            data = handle.read()
    except FileNotFoundError:
        return []
    text = data.decode("utf-8", errors="replace").replace("\r", "\n")
    return text.splitlines()[-lines:]


def log_path(home: Path, run_id: str) -> Path:
    return runs_root(home) / run_id / LOG_FILE


def gpu_runs(snapshot: Any, records: dict[str, RunRecord]) -> dict[int, list[str]]:
    """GPU index -> names of our running runs on it: the GPUs a run was given (status
    ``gpus``) plus any GPU process whose pid is a run's worker or one of its children."""
    found: dict[int, list[str]] = {gpu.index: [] for gpu in getattr(snapshot, "gpus", [])}
    running = [record for record in records.values() if record.info.state == "running"]
    workers = {record.status["pid"]: record for record in running if record.status.get("pid")}

    def add(index: int, record: RunRecord) -> None:
        if index in found and record.info.name not in found[index]:
            found[index].append(record.info.name)

    for record in running:
        for index in record.info.gpus or ():
            add(index, record)
    for gpu in getattr(snapshot, "gpus", []):
        for proc in gpu.processes:
            record = workers.get(proc.pid) or _parent_worker(proc.pid, workers)
            if record is not None:
                add(gpu.index, record)
    return found


def _parent_worker(pid: int, workers: dict[Any, RunRecord]) -> RunRecord | None:
    """The run whose worker is an ancestor of ``pid`` (DataLoader workers hold CUDA memory too)."""
    import psutil

    try:
        for parent in psutil.Process(pid).parents():
            if parent.pid in workers:
                return workers[parent.pid]
    except psutil.Error:
        return None
    return None


class HostReader:
    """The default snapshot function: host + GPUs, without the per-run process scan (runs
    are matched to GPUs in :func:`gpu_runs`). Where NVML is missing it is probed again
    only every ``retry`` seconds, not every second."""

    def __init__(self, retry: float = 60.0) -> None:
        self.retry = retry
        self._no_nvml: tuple[float, str] | None = None  # (when, why)

    def __call__(self) -> Any:
        from console.gpus import HostSnapshot, host_info, snapshot

        if self._no_nvml and time.monotonic() - self._no_nvml[0] < self.retry:
            return HostSnapshot(time=time.time(), host=host_info(), gpus=[], nvml_error=self._no_nvml[1])
        snap = snapshot(pid_to_run={})
        self._no_nvml = (time.monotonic(), snap.nvml_error) if snap.nvml_error and not snap.gpus else None
        return snap
