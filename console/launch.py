"""The local launcher: start a worker in its own session, kill a run completely, relaunch.

Start: ``python -m lowrank.train RUN_DIR`` in a new session (own process group, no
controlling terminal, so closing or ``kill -9``-ing the console leaves it running),
stdin from /dev/null and stdout+stderr appended to ``output.log`` -- a file, never a
pipe that fills and blocks the worker (research notes, 28 Nov 2017: the runner hung in
``communicate()``). ``CUDA_VISIBLE_DEVICES`` pins the run to its GPUs, with
``CUDA_DEVICE_ORDER=PCI_BUS_ID`` so CUDA's indices are NVML's (the note's stray
allocations on GPU 0). Every process of the run inherits ``LOWRANK_RUN_ID``, which
finds even descendants that left the process group.

Reaping: the worker is our child; a daemon thread waits on it, so a long-lived launcher
(scheduler, TUI) never accumulates zombies, and the thread records the exit code when
the worker died without writing a final state. When the launcher exits first, the worker
is re-parented to init, which reaps it. (A double fork would also avoid zombies but
loses the exit code.)

Kill: snapshot the run's processes (worker, its descendants, its group and session, any
process carrying its ``LOWRANK_RUN_ID``) *before* signalling; SIGTERM the worker so it
stops at the next step and flushes its metrics; after the grace period, SIGKILL
everything still alive, re-scanning until nothing is left. psutil's Process objects
check the create time before signalling, so a reused pid is never hit.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator, Mapping

import psutil

from lowrank.errors import UserError
from lowrank.rundir import (CHECKPOINT_FILE, FINAL_STATES, LOG_FILE, STATUS_FILE, RunDir, atomic_write_text,
                            file_lock, now_iso)

WORKER_MODULE = "lowrank.train"
WORKER_ENV = "LOWRANK_WORKER"  # module name or path of a .py file to run instead (tests use a fake worker)
RUN_ENV = "LOWRANK_RUN_ID"  # inherited by every process of a run: the sweep's last resort
CREATE_TIME_TOLERANCE = 1.0  # seconds; same pid + create time within this = same process
NVML_WAIT_SECONDS = 5.0


# ---------------------------------------------------------------- status under the run's lock


@contextlib.contextmanager
def locked_status(run: RunDir) -> Iterator[dict[str, Any]]:
    """Read-modify-write status.json under the run's lock (the lock update_status uses).

    Lets the launcher check-and-claim a queued run atomically, so a ``kill`` of a queued
    run and a scheduler start can never both win. Mutate the yielded dict in place.
    """
    with file_lock(run.file(".status.lock")):
        from lowrank.rundir import read_json

        status = read_json(run.file(STATUS_FILE))
        before = json.dumps(status, sort_keys=True, default=str)
        yield status
        if json.dumps(status, sort_keys=True, default=str) != before:
            atomic_write_text(run.file(STATUS_FILE), json.dumps(status, indent=2, default=str))


# ---------------------------------------------------------------- process identity


def _alive(proc: psutil.Process) -> bool:
    """Still the same process (create time checked by psutil) and not a zombie."""
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def worker_process(status: Mapping[str, Any]) -> psutil.Process | None:
    """The run's live worker process, verified by create time (or by command line when
    no create time was recorded); None when it is gone or the pid was reused."""
    pid = status.get("pid")
    if not pid:
        return None
    try:
        proc = psutil.Process(int(pid))
        if not _alive(proc):
            return None
        recorded = status.get("create_time")
        if recorded is not None:
            return proc if abs(proc.create_time() - float(recorded)) < CREATE_TIME_TOLERANCE else None
        # started by hand (python -m lowrank.train DIR): the command line names the run
        run_id = status.get("run_id") or ""
        return proc if run_id and any(run_id in part for part in proc.cmdline()) else None
    except (psutil.Error, ValueError):
        return None


def _own_lineage() -> set[int]:
    """This process and its ancestors: never targets of a sweep."""
    pids = {os.getpid()}
    with contextlib.suppress(psutil.Error):
        pids.update(parent.pid for parent in psutil.Process().parents())
    return pids


def run_processes(run: RunDir, status: Mapping[str, Any] | None = None) -> dict[int, psutil.Process]:
    """Every live process of the run: the worker and its descendants, members of its
    process group or session created after it, and any process whose environment carries
    the run's ``LOWRANK_RUN_ID`` (descendants that called setsid and were orphaned)."""
    status = run.read_status() if status is None else status
    found: dict[int, psutil.Process] = {}
    worker = worker_process(status)
    born = None
    if worker is not None:
        found[worker.pid] = worker
        born = worker.create_time()
        with contextlib.suppress(psutil.Error):
            for child in worker.children(recursive=True):
                found[child.pid] = child
    group = status.get("pgid")
    session = status.get("sid", group)
    skip = _own_lineage()
    for proc in psutil.process_iter():
        if proc.pid in found or proc.pid in skip:
            continue
        try:
            if _carries_run(proc, run.run_id):
                found[proc.pid] = proc
            elif born is not None and group and proc.create_time() >= born - CREATE_TIME_TOLERANCE and (
                    os.getpgid(proc.pid) == group or os.getsid(proc.pid) == session):
                # the group/session id stays reserved while any member lives, so a member
                # born after our worker belongs to it
                found[proc.pid] = proc
        except (psutil.Error, OSError):
            continue
    return {pid: proc for pid, proc in found.items() if _alive(proc)}


def marked_processes() -> dict[int, str]:
    """pid -> run id for every live process on the host carrying a ``LOWRANK_RUN_ID`` (one pass)."""
    found: dict[int, str] = {}
    skip = _own_lineage()
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


def _carries_run(proc: psutil.Process, run_id: str) -> bool:
    try:
        return proc.environ().get(RUN_ENV) == run_id
    except (psutil.Error, OSError):
        return False  # another user's process, or gone


# ---------------------------------------------------------------- start


def worker_command(run: RunDir, *, resume: bool = False, python: str = sys.executable,
                   worker: str | None = None) -> list[str]:
    """The worker's argv: ``python -m lowrank.train RUN_DIR [--resume]``."""
    worker = worker or os.environ.get(WORKER_ENV) or WORKER_MODULE
    target = [worker] if worker.endswith(".py") else ["-m", worker]
    return [python, *target, str(run.path), *(["--resume"] if resume else [])]


def _reap(run: RunDir, proc: subprocess.Popen) -> None:
    """Wait for the worker (no zombie); record its exit if it wrote no final state."""
    code = proc.wait()
    with contextlib.suppress(Exception):
        with locked_status(run) as status:
            if status.get("pid") != proc.pid or status.get("state") in FINAL_STATES:
                return
            killed = bool(status.get("kill_requested"))
            how = f"signal {signal.Signals(-code).name}" if code < 0 else f"code {code}"
            status.update(state="killed" if killed else "failed", exit_code=code, ended=now_iso(),
                          error=f"killed ({how})" if killed else
                          f"worker exited with {how} without recording a final state (see {LOG_FILE})")


def start_worker(run: RunDir, *, gpus: list[int] | None = None, resume: bool = False,
                 python: str = sys.executable, extra_env: Mapping[str, str] | None = None,
                 worker: str | None = None) -> int:
    """Launch the run's worker in its own session; returns its pid.

    ``gpus``: the GPU indices to expose (``[]`` = CPU only, ``None`` = choose free GPUs
    now as the scheduler would, or inherit the environment where NVML sees no GPU).
    The run must be queued (or resumable); a run whose worker is alive is refused.
    """
    run = RunDir(Path(run.path).resolve())
    if gpus is None:
        gpus = _choose_gpus(run)
    env = dict(os.environ)
    env.update({"PYTHONUNBUFFERED": "1", RUN_ENV: run.run_id, "LOWRANK_HOME": str(run.home),
                "CUDA_DEVICE_ORDER": "PCI_BUS_ID"})
    if gpus is not None:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(index) for index in gpus)
    env.update(extra_env or {})
    command = worker_command(run, resume=resume, python=python, worker=worker)

    with locked_status(run) as status:
        state = status.get("state")
        if worker_process(status) is not None:  # whatever the state says: never two workers on one dir
            raise UserError(f"run {run.run_id} is already running (pid {status.get('pid')})",
                            hint=f"lowrank kill {run.run_id}")
        if state in FINAL_STATES and not resume:
            raise UserError(f"run {run.run_id} has already ended ({state})",
                            hint=f"lowrank relaunch {run.run_id} [--resume]")
        with open(run.file(LOG_FILE), "ab") as log:
            log.write(f"\n=== {now_iso()} launch{' --resume' if resume else ''} on {socket.gethostname()} "
                      f"gpus={gpus if gpus is not None else 'inherited'}: {' '.join(command)}\n".encode())
            log.flush()
            proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True, close_fds=True, env=env)
        try:
            create_time = psutil.Process(proc.pid).create_time()
        except psutil.Error:  # exited already: the reaper records it
            create_time = None
        status.update(state="running", pid=proc.pid, pgid=proc.pid, sid=proc.pid, create_time=create_time,
                      gpus=gpus, launcher_host=socket.gethostname(), launcher_pid=os.getpid(), launched=now_iso(),
                      command=command, cwd=os.getcwd(), attempt=int(status.get("attempt") or 0) + 1,
                      launch_epoch=int(status.get("epoch") or 0) if resume else 0, resume=resume,
                      exit_code=None, ended=None, error=None, kill_requested=None)
    threading.Thread(target=_reap, args=(run, proc), name=f"reap-{proc.pid}", daemon=True).start()
    return proc.pid


def _choose_gpus(run: RunDir) -> list[int] | None:
    """GPUs for a run started directly (no queue): what the scheduler would assign now."""
    from console import gpus as gpus_mod
    from console.runs import RunStore
    from console.scheduler import Job, plan, requirement_for, running_jobs

    requirement = requirement_for(run)
    if requirement.gpus == 0:
        return []
    store = RunStore(run.home)
    snap = gpus_mod.snapshot(store.pid_map())
    if not snap.has_gpus:
        return None  # no NVML view: leave CUDA_VISIBLE_DEVICES as the user set it
    started = plan([Job(run.run_id, requirement)], running_jobs(store), snap, max_cpu_runs=1 << 30)
    if not started:
        raise UserError(f"no GPU is free for {run.run_id} (needs {requirement.describe()}; "
                        f"{len(snap.gpus)} GPU(s), see `lowrank gpus`)",
                        hint="queue it with --detach, pick one with --gpu N, or allow sharing: resources.share=true")
    return started[0][1]


# ---------------------------------------------------------------- kill


@dataclasses.dataclass
class KillReport:
    """What :func:`kill_run` did: every process found, how each ended, what survived."""

    run_id: str
    state_before: str | None
    state: str | None = None
    pids: list[int] = dataclasses.field(default_factory=list)  # all processes of the run, before and after
    exited: list[int] = dataclasses.field(default_factory=list)  # ended without SIGKILL
    sigkilled: list[int] = dataclasses.field(default_factory=list)
    survivors: list[int] = dataclasses.field(default_factory=list)  # still alive at the end: a problem
    gpu_pids_left: list[int] = dataclasses.field(default_factory=list)  # NVML still lists them
    nvml_checked: bool = False
    seconds: float = 0.0
    message: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _wait_gone(procs: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Wait until each process is gone (or a zombie); returns those still alive."""
    deadline = time.monotonic() + timeout
    alive = [proc for proc in procs if _alive(proc)]
    while alive and time.monotonic() < deadline:
        time.sleep(0.05)
        alive = [proc for proc in alive if _alive(proc)]
    return alive


def _signal(proc: psutil.Process, signum: int) -> bool:
    try:
        proc.send_signal(signum)  # psutil refuses if the pid now names another process
        return True
    except psutil.Error:
        return False


def kill_run(run: RunDir, *, grace: float = 10.0, force: bool = False,
             nvml_wait: float = NVML_WAIT_SECONDS) -> KillReport:
    """Stop a run and every process it started; the run ends ``killed``.

    SIGTERM to the worker (it stops at the next step and writes its final status), up
    to ``grace`` seconds, then SIGKILL to all processes of the run still alive (``force``
    skips the SIGTERM). A queued run is simply cancelled. On a GPU host, waits up to
    ``nvml_wait`` seconds for the run's pids to leave the GPUs and reports any that stay.
    """
    began = time.monotonic()
    with locked_status(run) as status:
        report = KillReport(run.run_id, state_before=status.get("state"))
        if status.get("state") == "queued" and not status.get("pid"):
            status.update(state="killed", ended=now_iso(), error="cancelled before it started")
            report.state, report.message = "killed", "cancelled (it was queued)"
            return report
        if status.get("state") not in FINAL_STATES:
            status["kill_requested"] = now_iso()

    targets = run_processes(run, status)  # snapshot before any signal
    report.pids = sorted(targets)
    worker = worker_process(status)
    if worker is not None and not force:
        _signal(worker, signal.SIGTERM)  # only the worker: it shuts its DataLoader down itself
        if _wait_gone([worker], grace):
            report.message = f"worker ignored SIGTERM for {grace:g}s; "
        # stragglers (a child that ignores SIGTERM, an orphan) get a moment, then SIGKILL
        _wait_gone(list(targets.values()), min(1.0, max(0.0, grace - (time.monotonic() - began))))

    for _ in range(8):  # SIGKILL until a fresh scan finds nothing (a dying parent may have forked)
        for pid, proc in run_processes(run, status).items():
            targets.setdefault(pid, proc)
        alive = [proc for proc in targets.values() if _alive(proc)]
        if not alive:
            break
        if worker is not None and _alive(worker):
            with contextlib.suppress(OSError):
                os.killpg(worker.pid, signal.SIGKILL)  # group id verified: its leader is alive
        for proc in alive:
            _signal(proc, signal.SIGKILL)  # may already be dead from the killpg: that is fine
        report.sigkilled.extend(proc.pid for proc in alive)
        _wait_gone(alive, 3.0)
    report.pids = sorted(targets)
    report.survivors = sorted(proc.pid for proc in targets.values() if _alive(proc))
    report.sigkilled = sorted(set(report.sigkilled))
    report.exited = sorted(set(report.pids) - set(report.sigkilled) - set(report.survivors))

    time.sleep(0.05)  # let the worker's own final write (state killed) land first
    with locked_status(run) as final:
        if final.get("state") not in FINAL_STATES:
            final.update(state="killed", ended=now_iso(),
                         exit_code=-signal.SIGKILL if report.sigkilled else final.get("exit_code"),
                         error="killed by lowrank kill" + (" (SIGKILL)" if report.sigkilled else ""))
        report.state = final.get("state")
    if report.pids:
        _check_gpus_released(report, nvml_wait)
    report.seconds = time.monotonic() - began
    report.message += (f"{len(report.pids)} process(es) stopped, {len(report.sigkilled)} needed SIGKILL"
                       if report.pids else "no live process")
    if report.survivors:
        report.message += f"; STILL ALIVE: {report.survivors}"
    if report.gpu_pids_left:
        report.message += f"; NVML still lists pids {report.gpu_pids_left} on a GPU"
    return report


def _check_gpus_released(report: KillReport, wait: float) -> None:
    """Through NVML, wait until none of the run's pids holds GPU memory (GPU hosts only)."""
    from console.gpus import gpu_pids, snapshot

    deadline = time.monotonic() + wait
    while True:
        snap = snapshot(pid_to_run={})
        if not snap.has_gpus:
            return
        report.nvml_checked = True
        left = sorted(set(report.pids) & set(gpu_pids(snap)))
        report.gpu_pids_left = left
        if not left or time.monotonic() >= deadline:
            return
        time.sleep(0.2)


# ---------------------------------------------------------------- relaunch


def relaunch(run: RunDir, resume: bool) -> RunDir:
    """Prepare a run to go again: ``resume`` re-queues it in place (from its checkpoint);
    otherwise a new run is created from the same resolved config (``relaunched_from``).

    Returns the queued run; starting it (foreground or scheduler) is the caller's choice.
    """
    from console.runs import reconcile

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
        current.update(state="queued", previous_attempts=history, resume=True, pid=None, pgid=None, sid=None,
                       create_time=None, exit_code=None, ended=None, error=None, kill_requested=None,
                       requeued=now_iso())
    return run
