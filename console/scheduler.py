"""The queue: runs wait with a resource requirement and start when resources free up.

Decision and action are apart: the decision (:func:`console.placement.plan`) is pure; the
action is a small detached process, ``python -m console.scheduler``, started on demand by
:func:`submit` in its own session and guarded by an fcntl lock in LOWRANK_HOME, so
exactly one runs per home, it outlives the console that queued the runs, and it exits
when the queue is empty (nothing idles in the background). It starts each run through
the run's backend (:mod:`console.backends`); the requirement rules are in
:mod:`console.placement`.
"""

from __future__ import annotations

import argparse
import fcntl
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Mapping

import psutil

from lowrank.errors import UserError
from lowrank.rundir import RunDir, lowrank_home, now_iso

from console import backends
from console import gpus as gpus_mod
from console.placement import (MAX_CPU_RUNS_ENV, RESOURCE_KEYS, Job, Requirement, default_max_cpu_runs,  # noqa: F401
                               impossible, plan, queued_jobs, requirement_for, requirement_from_cli,
                               requirement_from_config, resolve_requirement, running_jobs)
from console.runs import RunStore, identity_fields, locked_status, started_as_recorded, worker_process

LOCK_FILE = "scheduler.lock"
INFO_FILE = "scheduler.json"
LOG_FILE = "scheduler.log"
POLL_ENV = "LOWRANK_SCHEDULER_POLL"
__all__ = ["MAX_CPU_RUNS_ENV", "RESOURCE_KEYS", "Job", "Requirement", "default_max_cpu_runs", "impossible", "plan",
           "queued_jobs", "requirement_for", "requirement_from_cli", "requirement_from_config", "resolve_requirement",
           "running_jobs", "submit", "submit_many", "ensure_scheduler", "scheduler_running", "scheduler_info", "stop_scheduler",
           "Scheduler", "main"]


# ---------------------------------------------------------------- submit and the daemon


def submit(run: RunDir, requirement: Requirement | Mapping[str, Any] | None = None, *,
           resume: bool = False) -> None:
    """Queue ``run`` with its requirement and make sure a scheduler is running.

    ``requirement``: a full :class:`Requirement`, or overrides of the config's
    ``resources`` (as :func:`requirement_from_cli` returns), or None for the config's.
    A run of another backend (status ``backend``, e.g. slurm) goes to that backend's own
    queue at once (a Slurm job); this host's scheduler never places it.
    """
    submit_many([(run, requirement)], resume=resume)


def submit_many(runs: list[tuple[RunDir, Requirement | Mapping[str, Any] | None]], *, resume: bool = False) -> None:
    """Queue several runs (:func:`submit` for each): local runs go to this home's scheduler,
    the runs of another backend to :meth:`Backend.start_many` together (Slurm: one job array)."""
    local, others = [], {}
    for run, requirement in runs:
        status = run.read_status()
        if worker_process(status) is not None:
            raise UserError(f"run {run.run_id} is running; it cannot be queued again",
                            hint=f"lowrank kill {run.run_id} first")
        try:
            need = resolve_requirement(run.read_config(), requirement)
        except UserError as error:
            run.update_status(state="failed", ended=now_iso(), error=f"bad resource requirement: {error.detail}")
            raise
        run.update_status(state="queued", requirement=need.to_dict(), resume=bool(resume), submitted=now_iso())
        name = status.get("backend") or backends.DEFAULT
        if name == backends.DEFAULT:
            local.append(run)
        else:
            others.setdefault(name, []).append(run)
    for name, group in others.items():
        backends.get(name).start_many(group, resume=resume)
    if local:
        ensure_scheduler(local[0].home)


def _try_lock(home: Path) -> int | None:
    """The scheduler lock's fd if we got it (non-blocking), else None."""
    home.mkdir(parents=True, exist_ok=True)
    fd = os.open(home / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return fd
    except OSError:
        os.close(fd)
        return None


def _unlock(fd: int) -> None:
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)


def scheduler_running(home: Path | None = None) -> bool:
    """Whether a scheduler holds this home's lock."""
    fd = _try_lock(Path(home or lowrank_home()))
    if fd is None:
        return True
    _unlock(fd)
    return False


def ensure_scheduler(home: Path | None = None, *, python: str = sys.executable) -> int | None:
    """Start the detached scheduler for ``home`` unless one is running; returns its pid.

    We take the lock here and hand the locked descriptor to the child (an flock belongs
    to the open file description, which the child shares), so from this moment on no
    second scheduler can start: no window, no duplicates.
    """
    home = Path(home or lowrank_home()).resolve()
    fd = _try_lock(home)
    if fd is None:
        return None
    env = dict(os.environ, LOWRANK_HOME=str(home), PYTHONUNBUFFERED="1")
    try:
        with open(home / LOG_FILE, "ab") as log:
            proc = subprocess.Popen([python, "-m", "console.scheduler", "--home", str(home), "--lock-fd", str(fd)],
                                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True, close_fds=True, pass_fds=(fd,), env=env)
    except BaseException:
        _unlock(fd)
        raise
    os.close(fd)  # closing our copy keeps the lock: the child's descriptor still holds it
    threading.Thread(target=proc.wait, name=f"reap-scheduler-{proc.pid}", daemon=True).start()  # no zombie
    return proc.pid


def set_cpu_slots(slots: int, home: Path | None = None) -> Path:
    """Keep ``cpu_slots`` in ``$LOWRANK_HOME/config.yaml`` (other settings there are kept)."""
    import yaml

    from lowrank.rundir import atomic_write_text, file_lock

    from console.placement import HOME_SETTINGS, home_settings

    home = Path(home or lowrank_home())
    home.mkdir(parents=True, exist_ok=True)
    path = home / HOME_SETTINGS
    with file_lock(home / ".config.lock"):
        settings = home_settings(home)
        settings["cpu_slots"] = int(slots)
        atomic_write_text(path, yaml.safe_dump(settings, sort_keys=True))
    return path


def revive(store: RunStore) -> str | None:
    """Start a scheduler when this home has queued local runs and none holds the lock
    (``ls``, ``run --detach`` and the console call it); a line saying what happened, or None."""
    # submitted: queued for the scheduler (a foreground `lowrank run` that died before starting
    # its worker leaves a queued run that nobody asked the scheduler to start)
    queued = [run.run_id for run, status in store.statuses(check=False)
              if status.get("state") == "queued" and status.get("submitted") and not status.get("pid")
              and status.get("backend") in (None, "local")]
    if not queued or scheduler_running(store.home):
        return None
    pid = ensure_scheduler(store.home)
    if pid is None:  # another process started one in the meantime
        return None
    return (f"the queue had no scheduler ({len(queued)} queued run(s) waiting): started one, pid {pid} "
            f"(log: {store.home / LOG_FILE})")


def scheduler_info(home: Path | None = None) -> dict[str, Any]:
    """The running scheduler's pid/start time (empty when none runs)."""
    from lowrank.rundir import read_json

    home = Path(home or lowrank_home())
    info = read_json(home / INFO_FILE)
    info["running"] = scheduler_running(home)
    return info


def stop_scheduler(home: Path | None = None, timeout: float = 10.0) -> bool:
    """SIGTERM the scheduler (runs keep going); True if one was stopped."""
    info = scheduler_info(home)
    if not info.get("running") or not info.get("pid"):
        return False
    try:
        proc = psutil.Process(int(info["pid"]))
        if not started_as_recorded(proc, info):  # the pid names another process now
            return False
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout)
        return True
    except (psutil.Error, ValueError):
        return False


class Scheduler:
    """The loop of the detached scheduler process: poll, plan, launch, exit when idle."""

    def __init__(self, home: Path, *, poll: float = 1.0, max_cpu_runs: int | None = None,
                 lock_fd: int | None = None) -> None:
        self.home = Path(home).resolve()
        self.lock_fd = lock_fd  # a descriptor already holding the lock (handed over by ensure_scheduler)
        self.poll = poll
        self.max_cpu_runs = max_cpu_runs
        self.stopping = False

    def log(self, message: str) -> None:
        print(f"{now_iso()} [scheduler {os.getpid()}] {message}", flush=True)

    def step(self) -> tuple[int, int]:
        """One round: reconcile, fail the impossible, start what fits. Returns (started, still queued)."""
        store = RunStore(self.home)
        queued = queued_jobs(store)
        if not queued:
            return 0, 0
        snap = gpus_mod.snapshot(store.pid_map())
        waiting = []
        for job, status in queued:
            reason = impossible(job, snap)
            if reason:
                self.log(f"{job.run_id}: cannot start: {reason}")
                store.get(job.run_id).update_status(state="failed", ended=now_iso(), error=f"cannot start: {reason}")
            else:
                waiting.append((job, status))
        max_cpu = self.max_cpu_runs or default_max_cpu_runs(snap.host.cpu_count, self.home)
        reasons: dict[str, str] = {}
        starts = plan([job for job, _ in waiting], running_jobs(store), snap, max_cpu_runs=max_cpu, reasons=reasons)
        for job, status in waiting:  # the queue explains itself: status.json says why a run waits
            reason = reasons.get(job.run_id)
            if reason and reason != status.get("waiting"):
                with contextlib.suppress(OSError, UserError):
                    with locked_status(store.get(job.run_id)) as current:
                        if current.get("state") == "queued":
                            current["waiting"] = reason
        resume = {job.run_id: bool(status.get("resume")) for job, status in waiting}
        threads = str(max(1, snap.host.cpu_count // max_cpu))
        started = 0
        for run_id, gpus in starts:
            extra = {} if gpus or "OMP_NUM_THREADS" in os.environ else {"OMP_NUM_THREADS": threads}
            try:
                run = store.get(run_id)
                pid = backends.for_run(run).start(run, gpus=gpus, resume=resume[run_id], extra_env=extra)
            except UserError as error:  # killed or started elsewhere since we looked
                self.log(f"{run_id}: not started: {error}")
                continue
            started += 1
            self.log(f"started {run_id} pid {pid} on {'GPU ' + ','.join(map(str, gpus)) if gpus else 'CPU'}")
        return started, len(waiting) - started

    def serve(self) -> int:
        """Run until the queue is empty (or SIGTERM); 0 also when another scheduler holds the lock."""
        fd = self.lock_fd if self.lock_fd is not None else _try_lock(self.home)
        if fd is None:
            return 0
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        self._write_info()
        self.log(f"serving {self.home}")
        try:
            while not self.stopping:
                try:
                    _, waiting = self.step()
                except Exception as error:  # keep serving: one odd run dir must not stop the queue
                    self.log(f"error in step: {type(error).__name__}: {error}")
                    waiting = 1
                if waiting == 0:
                    # release, then look again: a submit that saw our lock held must not be lost
                    (self.home / INFO_FILE).unlink(missing_ok=True)
                    _unlock(fd)
                    fd = None
                    if not queued_jobs(RunStore(self.home)):
                        break
                    fd = _try_lock(self.home)
                    if fd is None:
                        return 0  # another scheduler took over
                    self._write_info()
                time.sleep(self.poll)
        finally:
            if fd is not None:
                (self.home / INFO_FILE).unlink(missing_ok=True)
                _unlock(fd)
        self.log("stopped" if self.stopping else "queue empty: exiting")
        return 0

    def _write_info(self) -> None:
        from lowrank.rundir import atomic_write_text

        atomic_write_text(self.home / INFO_FILE, json.dumps({
            "pid": os.getpid(), **identity_fields(os.getpid()), "started": now_iso(),
            "poll": self.poll, "max_cpu_runs": self.max_cpu_runs}))

    def _stop(self, signum: int, frame: Any) -> None:
        self.stopping = True


def main(argv: list[str] | None = None) -> int:
    """``python -m console.scheduler [--home H] [--poll S] [--max-cpu-runs N]``."""
    parser = argparse.ArgumentParser(prog="python -m console.scheduler", description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, default=None)
    parser.add_argument("--poll", type=float, default=float(os.environ.get(POLL_ENV, "1.0")))
    parser.add_argument("--max-cpu-runs", type=int, default=None)
    parser.add_argument("--lock-fd", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    return Scheduler(args.home or lowrank_home(), poll=args.poll, max_cpu_runs=args.max_cpu_runs,
                     lock_fd=args.lock_fd).serve()


if __name__ == "__main__":
    sys.exit(main())
