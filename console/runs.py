"""The run store: the console's read side of ``$LOWRANK_HOME/runs/``.

Lists runs with what a researcher scans for (model, method, budget, state, epoch, loss,
best error, elapsed, ETA), resolves unique id prefixes, and tails metrics incrementally
by byte offset. It also owns the record's two write rules every layer above uses:
:func:`locked_status` (read-modify-write of status.json under the run's lock) and the
identity of a recorded process (:func:`worker_process`: pid plus create time, so a reused
pid is never mistaken for our worker), and :func:`relaunch` (prepare a run to go again).
Nothing here imports another ``console`` module: backends, the scheduler and the
commands sit above it. Listing also *reconciles*: a run whose worker process vanished without
writing a final state (power cut, ``kill -9``, OOM killer) is marked ``failed`` with
error "worker disappeared" -- identified by pid plus process create time, so a reused
pid is never mistaken for our worker.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import socket
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping

import psutil

from lowrank.errors import UserError
from lowrank.rundir import (budget_of, read_jsonl_from, CHECKPOINT_FILE, CONFIG_FILE, FINAL_STATES, METRICS_FILE,
                            STATUS_FILE, RunDir, atomic_write_text, file_lock, lowrank_home, now_iso, read_json, runs_root)

from lowrank.run_files import UNREADABLE, UNREADABLE_KEY, config_for_display

DISAPPEARED = "worker disappeared"
RUN_ENV = "LOWRANK_RUN_ID"  # inherited by every process of a run: the sweep's last resort
CREATE_TIME_TOLERANCE = 1.0  # seconds; same pid + create time within this = same process
LOCAL = "local"  # the backend of a run whose status names none
# backend name -> how a run of that backend is reconciled (``reconcile(run, status) -> status``).
# Filled from above (console.backends registers its non-local backends when imported), so the
# store stays the bottom layer: it checks local processes itself and asks a table for the rest.
RECONCILERS: dict[str, Callable[[RunDir, dict[str, Any]], dict[str, Any]]] = {}


# ---------------------------------------------------------------- status under the run's lock


@contextlib.contextmanager
def locked_status(run: RunDir) -> Iterator[dict[str, Any]]:
    """Read-modify-write status.json under the run's lock (the lock update_status uses).

    Lets the launcher check-and-claim a queued run atomically, so a ``kill`` of a queued
    run and a scheduler start can never both win. Mutate the yielded dict in place.
    """
    with file_lock(run.file(".status.lock")):
        status = read_json(run.file(STATUS_FILE))
        before = json.dumps(status, sort_keys=True, default=str)
        yield status
        if json.dumps(status, sort_keys=True, default=str) != before:
            atomic_write_text(run.file(STATUS_FILE), json.dumps(status, indent=2, default=str))


# ---------------------------------------------------------------- process identity


def process_alive(proc: psutil.Process) -> bool:
    """Still the same process (create time checked by psutil) and not a zombie."""
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (``/proc/PID/stat`` field 22).

    Unlike psutil's ``create_time()`` (boot time + ticks, where the boot time is derived from
    the wall clock), this does not move when the clock steps: an NTP jump or a VM resume
    never makes our worker look like another process.
    """
    try:
        with open(f"/proc/{int(pid)}/stat", "rb") as handle:
            text = handle.read().decode("ascii", "replace")
        return int(text[text.rindex(")") + 2:].split()[19])  # fields after "pid (comm)": state is field 3
    except (OSError, ValueError, IndexError):
        return None


def boot_id() -> str | None:
    """This boot's id: start ticks compare only within one boot."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as handle:
            return handle.read().strip() or None
    except OSError:
        return None


def identity_fields(pid: int) -> dict[str, Any]:
    """What status.json records to recognise a process later: create time (display, other
    platforms), boot-relative start ticks and the boot id."""
    try:
        created: float | None = psutil.Process(pid).create_time()
    except psutil.Error:
        created = None
    return {"create_time": created, "start_ticks": start_ticks(pid), "boot_id": boot_id()}


def started_as_recorded(proc: psutil.Process, status: Mapping[str, Any]) -> bool:
    """Whether ``proc`` started when the recorded process did (boot-relative ticks when
    recorded in this boot, else psutil's create time within a tolerance)."""
    ticks = status.get("start_ticks")
    if ticks is not None and status.get("boot_id") and status.get("boot_id") == boot_id():
        return start_ticks(proc.pid) == int(ticks)
    recorded = status.get("create_time")
    if recorded is not None:
        return abs(proc.create_time() - float(recorded)) < CREATE_TIME_TOLERANCE
    return True  # nothing recorded (started by hand): the run check below decides


def _belongs_to(proc: psutil.Process, run_id: str) -> bool:
    """The process is a worker of this run: it carries the run's id in its environment (every
    launcher sets it) or names the run on its command line (``python -m lowrank.train DIR``)."""
    if carries_run(proc, run_id):
        return True
    try:
        return any(run_id in part for part in proc.cmdline())
    except (psutil.Error, OSError):
        return False


def worker_process(status: Mapping[str, Any]) -> psutil.Process | None:
    """The run's live worker process, or None when it is gone or the pid now names another
    process. Two checks, both needed: the recorded start (a reused pid started later) and
    that the process is this run's worker (a status.json naming someone else's pid and start
    time, planted or stale, never makes ``kill`` signal that process)."""
    pid, run_id = status.get("pid"), str(status.get("run_id") or "")
    if not pid or not run_id:
        return None
    try:
        proc = psutil.Process(int(pid))
        if not process_alive(proc) or not started_as_recorded(proc, status):
            return None
        return proc if _belongs_to(proc, run_id) else None
    except (psutil.Error, ValueError, TypeError):
        return None


def live_carriers(run_id: str) -> list[psutil.Process]:
    """Live processes (not ours) whose environment carries ``LOWRANK_RUN_ID=run_id``, oldest first."""
    procs = []
    for pid, carried in marked_processes().items():
        if carried == run_id:
            with contextlib.suppress(psutil.Error):
                procs.append(psutil.Process(pid))
    return sorted(procs, key=lambda proc: (start_ticks(proc.pid) or 0, proc.pid))


def own_lineage() -> set[int]:
    """This process and its ancestors: never targets of a sweep."""
    pids = {os.getpid()}
    with contextlib.suppress(psutil.Error):
        pids.update(parent.pid for parent in psutil.Process().parents())
    return pids


def marked_processes() -> dict[int, str]:
    """pid -> run id for every live process on the host carrying a ``LOWRANK_RUN_ID`` (one pass)."""
    found: dict[int, str] = {}
    skip = own_lineage()
    for proc in psutil.process_iter():
        if proc.pid in skip:
            continue
        try:
            run_id = proc.environ().get(RUN_ENV)
            if run_id and proc.status() != psutil.STATUS_ZOMBIE:
                found[proc.pid] = run_id
        except (psutil.Error, OSError):
            continue
    return found


def carries_run(proc: psutil.Process, run_id: str) -> bool:
    try:
        return proc.environ().get(RUN_ENV) == run_id
    except (psutil.Error, OSError):
        return False  # another user's process, or gone


# ---------------------------------------------------------------- listing




def parse_time(text: str | None) -> float | None:
    """Seconds since the epoch from one of our ISO timestamps (None if missing/bad)."""
    if not text:
        return None
    try:
        return _dt.datetime.fromisoformat(str(text)).timestamp()
    except ValueError:
        return None


@dataclass
class RunInfo:
    """One row of ``lowrank ls``: identity, experiment, state and progress of a run."""

    run_id: str
    name: str
    state: str
    model: str | None
    dataset: str | None
    method: str | None
    budget: float | None
    params: int | None
    gpus: list[int] | None
    epoch: int | None
    epochs: int | None
    last_loss: float | None
    best_err1: float | None
    elapsed_s: float | None
    eta_s: float | None
    created: str | None
    pid: int | None
    host: str | None
    error: str | None
    path: str
    waiting: str | None = None  # queued: why it has not started (written by the scheduler)
    backend: str = LOCAL  # where the worker runs (console.backends)
    slurm_job_id: str | None = None  # a Slurm run's job (``42``, array task ``42_3``)
    slurm_state: str | None = None  # what Slurm last said about it (PENDING, RUNNING, TIMEOUT, ...)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def state_shown(self) -> str:
        """The state with the cluster's own word for it when there is one: ``queued/PENDING``."""
        return f"{self.state}/{self.slurm_state}" if self.slurm_state else self.state


def run_info(run: RunDir, status: dict[str, Any], config: dict[str, Any], now: float | None = None) -> RunInfo:
    """Summarise one run from its status and config (pure: no process checks)."""
    now = time.time() if now is None else now
    sub = config.get("substitute") or {}
    budget = budget_of(config, status)
    budget = budget if isinstance(budget, (int, float)) and not isinstance(budget, bool) else None
    started = parse_time(status.get("started")) or parse_time(status.get("launched"))
    ended = parse_time(status.get("ended"))
    state = status.get("state", "unknown")
    unreadable = status.get("unreadable") or config.get(UNREADABLE_KEY)  # shown, never hidden or raised on
    if unreadable:
        state = UNREADABLE
    elapsed = attempt = None
    if started is not None:  # this attempt, plus the attempts before a resume (elapsed_before)
        attempt = max(0.0, (ended if ended and state in FINAL_STATES else now) - started)
        before = status.get("elapsed_before")
        elapsed = attempt + (float(before) if isinstance(before, (int, float)) and before > 0 else 0.0)
    epoch, epochs = status.get("epoch"), status.get("epochs") or (config.get("train") or {}).get("epochs")
    epochs = epochs if isinstance(epochs, int) and not isinstance(epochs, bool) else None
    eta = None
    first = status.get("launch_epoch") or 0
    name, model = status.get("name") or config.get("name") or run.run_id, (config.get("model") or {}).get("name")
    dataset, method = (config.get("data") or {}).get("name"), status.get("method") or sub.get("method")
    if state == "running" and attempt and epoch and epochs and epoch > first:
        eta = attempt / (epoch - first) * max(0, epochs - epoch)  # the pace of this attempt
    return RunInfo(run_id=run.run_id, name=_text(name), state=state, model=_text(model), dataset=_text(dataset),
                   method=_text(method), budget=budget, params=status.get("params"),
                   gpus=status.get("gpus"), epoch=epoch, epochs=epochs, last_loss=status.get("last_loss"),
                   best_err1=status.get("best_val_err1"), elapsed_s=elapsed, eta_s=eta,
                   created=status.get("created"), pid=status.get("pid"), host=status.get("host"),
                   error=f"{UNREADABLE}: {unreadable}" if unreadable else status.get("error"), path=str(run.path),
                   waiting=_text(status.get("waiting")) if state == "queued" else None,
                   backend=_text(status.get("backend")) or LOCAL, slurm_job_id=_text(status.get("slurm_job_id")),
                   slurm_state=_text(status.get("slurm_state")))


def _text(value: Any) -> str | None:
    """A config value shown as text (a hand-edited config may hold a list where a name belongs)."""
    return None if value is None else value if isinstance(value, str) else str(value)


def reconcile(run: RunDir, status: dict[str, Any] | None = None) -> dict[str, Any]:
    """Give a run whose worker is gone without a final state the state it really ended in.

    ``killed`` when a kill was requested (``kill_requested`` in status: the worker died of
    the kill before ``kill_run`` wrote its final status), otherwise ``failed`` ("worker
    disappeared"). The check and the write happen under the status lock, so a worker or a
    ``kill_run`` writing its own final state at the same moment always wins. Only runs
    launched on this host can be checked; others are returned unchanged. A run of another
    backend (status ``backend``, e.g. slurm) is reconciled by that backend's entry in
    :data:`RECONCILERS` (unchanged while none is registered).
    """
    status = run.read_status() if status is None else status
    backend = status.get("backend") or LOCAL
    if backend != LOCAL:
        check = RECONCILERS.get(backend)
        return check(run, status) if check is not None else status
    if not _maybe_vanished(status):
        return status
    time.sleep(0.05)  # a worker that just exited may be writing its final status right now
    with locked_status(run) as fresh:
        if not _maybe_vanished(fresh) or fresh.get("pid") != status.get("pid"):
            return dict(fresh)
        if fresh.get("kill_requested"):
            fresh.update(state="killed", ended=now_iso(),
                         error=f"killed by lowrank kill (requested {fresh['kill_requested']})")
        else:
            fresh.update(state="failed", ended=now_iso(),
                         error=f"{DISAPPEARED} (pid {fresh.get('pid')} exited without recording a "
                               f"final state; see {run.file('output.log')})")
        return dict(fresh)


def _maybe_vanished(status: dict[str, Any]) -> bool:
    """A ``running`` run of this host whose worker process no longer exists, and no other
    process of the run lives either (a run is never declared dead while any process carrying
    its ``LOWRANK_RUN_ID`` runs: a clock step or a torchrun agent restart is not a death)."""
    if status.get("state") != "running" or not status.get("pid"):
        return False
    if status.get("backend") not in (None, "local"):
        return False  # another backend's job: its own poll decides
    if (status.get("launcher_host") or status.get("host")) not in (None, socket.gethostname()):
        return False
    if worker_process(status) is not None:
        return False
    return not live_carriers(str(status.get("run_id") or ""))


class RunStore:
    """Every run under one LOWRANK_HOME, newest last (ids sort by creation time)."""

    def __init__(self, home: Path | str | None = None) -> None:
        self.home = Path(home).expanduser().resolve() if home else lowrank_home()

    @property
    def root(self) -> Path:
        return runs_root(self.home)

    def run_dirs(self) -> list[RunDir]:
        """All run directories (those with a status.json), sorted by id."""
        if not self.root.is_dir():
            return []
        return [RunDir(path) for path in sorted(self.root.iterdir())
                if path.is_dir() and (path / STATUS_FILE).exists()]

    def get(self, run_id: str) -> RunDir:
        path = self.root / run_id
        if not (path / STATUS_FILE).exists():
            raise UserError(f"no run {run_id!r} in {self.root}")
        return RunDir(path)

    def statuses(self, *, check: bool = True) -> list[tuple[RunDir, dict[str, Any]]]:
        """(run, status) for every run; ``check`` reconciles runs whose worker vanished."""
        out = []
        for run in self.run_dirs():
            status = run.read_status()
            if check:
                status = reconcile(run, status)
            out.append((run, status))
        return out

    def list(self, states: Iterable[str] | None = None, *, check: bool = True) -> list[RunInfo]:
        """Summaries of every run (optionally only those in ``states``)."""
        wanted = set(states or ())
        now = time.time()
        infos = []
        for run, status in self.statuses(check=check):
            if wanted and status.get("state") not in wanted:
                continue
            infos.append(run_info(run, status, read_config(run), now))
        return infos

    def resolve(self, text: str) -> RunDir:
        """The run that ``text`` names: a full id, ``last``/``last~N``, an id tail as the console
        shows it (``3f2a``), a unique prefix, or a path to a run directory
        (:mod:`console.run_ids`: one grammar for every command). No match or several
        matches is a :class:`UserError` that lists the candidates.
        """
        from console.run_ids import resolve_in  # layer 0, pure: the grammar lives there

        return resolve_in(self.root, text)

    def pid_map(self) -> dict[int, str]:
        """pid -> run id for every process of every running run (worker, group, descendants)."""
        running = {run.run_id: status for run, status in self.statuses(check=False)
                   if status.get("state") == "running" and status.get("pid")}
        if not running:
            return {}
        found: dict[int, str] = {}
        for run_id, status in running.items():
            worker = worker_process(status)
            if worker is None:
                continue
            found[worker.pid] = run_id
            try:
                for child in worker.children(recursive=True):
                    found.setdefault(child.pid, run_id)
            except psutil.Error:
                pass
        for pid, run_id in marked_processes().items():  # one scan for all runs: escaped descendants
            if run_id in running:
                found.setdefault(pid, run_id)
        return found


def read_config(run: RunDir) -> dict[str, Any]:
    """The run's config.yaml as a dict for display; when it cannot be read (missing, binary, a
    list, a section that is a string ...) what could be salvaged, with the reason under
    ``UNREADABLE_KEY`` (:func:`run_info` then shows the run as ``unreadable: reason``)."""
    return config_for_display(run.file(CONFIG_FILE))


class MetricsTail:
    """Read metrics.jsonl incrementally: each :meth:`read` returns only new whole lines.

    Keeps a byte offset; a trailing partial line is left for the next call, and a file
    that shrank (a run directory replaced) is read again from the start.
    """

    def __init__(self, path: Path | str, offset: int = 0) -> None:
        self.path = Path(path)
        self.offset = offset

    @classmethod
    def of(cls, run: RunDir) -> "MetricsTail":
        return cls(run.file(METRICS_FILE))

    def read(self) -> list[dict[str, Any]]:
        """The whole events appended since the last call."""
        records, self.offset = read_jsonl_from(self.path, self.offset)
        return records


# ---------------------------------------------------------------- relaunch (the record's side)


def _elapsed_so_far(status: Mapping[str, Any]) -> float:
    """Seconds the run has run over all its attempts up to the end of the latest one."""
    before = status.get("elapsed_before")
    total = float(before) if isinstance(before, (int, float)) and before > 0 else 0.0
    started = parse_time(status.get("started")) or parse_time(status.get("launched"))
    ended = parse_time(status.get("ended"))
    if started is not None and ended is not None and ended > started:
        total += ended - started
    return total


def relaunch(run: RunDir, resume: bool) -> RunDir:
    """Prepare a run to go again: ``resume`` re-queues it in place (from its checkpoint);
    otherwise a new run is created from the same resolved config (``relaunched_from``).

    Returns the queued run; starting it (foreground or scheduler) is the caller's choice.
    """
    status = reconcile(run)
    if status.get("state") == "running":
        raise UserError(f"run {run.run_id} is still running", hint=f"lowrank kill {run.run_id} first")
    if not resume:
        extra = {"relaunched_from": run.run_id}
        for key in ("requirement", "preset", "sweep", "sweep_method", "sweep_budget", "sweep_seed"):
            if status.get(key) is not None:
                extra[key] = status[key]
        return RunDir.create(run.read_config(), home=run.home, extra_status=extra)
    if status.get("state") == "finished":
        raise UserError(f"run {run.run_id} already finished; nothing to resume",
                        hint=f"lowrank relaunch {run.run_id} (without --resume) trains a fresh copy")
    if not run.file(CHECKPOINT_FILE).exists():
        raise UserError(f"run {run.run_id} has no checkpoint to resume from",
                        hint=f"lowrank relaunch {run.run_id} (without --resume) starts a fresh copy")
    with locked_status(run) as current:
        if current.get("state") == "running":
            raise UserError(f"run {run.run_id} is still running", hint=f"lowrank kill {run.run_id} first")
        history = list(current.get("previous_attempts") or [])
        history.append({key: current.get(key) for key in ("state", "epoch", "ended", "exit_code", "error")})
        current.update(elapsed_before=_elapsed_so_far(current))
        current.update(state="queued", previous_attempts=history, resume=True, pid=None, pgid=None, sid=None,
                       create_time=None, exit_code=None, ended=None, error=None, kill_requested=None,
                       requeued=now_iso())
    return run
