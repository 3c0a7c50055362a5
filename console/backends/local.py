"""The local backend: start a worker in its own session on this host, kill a run completely.

Start: ``python -m lowrank.train RUN_DIR`` in a new session (own process group, no
controlling terminal, so closing or ``kill -9``-ing the console leaves it running),
stdin from /dev/null and stdout+stderr appended to ``output.log`` -- a file, never a
pipe that fills and blocks the worker (research notes, 28 Nov 2017: the runner hung in
``communicate()``). ``CUDA_VISIBLE_DEVICES`` pins the run to its GPUs, with
``CUDA_DEVICE_ORDER=PCI_BUS_ID`` so CUDA's indices are NVML's (the note's stray
allocations on GPU 0). Every process of the run inherits ``LOWRANK_RUN_ID``, which
finds even descendants that left the process group.

Data-parallel runs (``resources.nproc`` N > 1): the one process started is torchrun,
``python -m torch.distributed.run --standalone --nproc-per-node N -m lowrank.train RUN_DIR``;
its elastic agent starts the N ranks (each in its own session, all carrying
``LOWRANK_RUN_ID``), forwards a SIGTERM to them and reports their exit. The status ``pid`` is
the agent's; rank 0 adds ``world_size``, ``launcher``, ``rank_pids`` and ``nodes``. Kill finds the
ranks and their DataLoader workers as the agent's descendants (and by the run's variable).

Node 0 of a run on several machines started by hand (``rendezvous``, :mod:`console.backends.nodes`):
the same, with torchrun's static rendezvous (``--nnodes N --node-rank 0 --master-addr HOST
--master-port PORT``) instead of ``--standalone``; the other nodes join it with their own
torchrun, and a kill here stops them too (their ranks stop at the same step as these).

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

The run record (status under its lock, process identity, relaunch) is the store's,
:mod:`console.runs`; choosing GPUs for a run started directly is :mod:`console.placement`'s.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Mapping

import psutil

from lowrank.errors import UserError
from lowrank.faults import fault_point
from lowrank.rundir import FINAL_STATES, LOG_FILE, RunDir, now_iso

from console import gpus as gpus_mod
from console.backends.base import Backend, KillReport
from console.placement import Job, plan, requirement_for, running_jobs
from console.runs import (CREATE_TIME_TOLERANCE, RUN_ENV, RunStore, carries_run, identity_fields, live_carriers,
                          locked_status, own_lineage, relaunch, worker_process)
from console.runs import process_alive as _alive

WORKER_MODULE = "lowrank.train"
TORCHRUN = ["-m", "torch.distributed.run", "--standalone"]  # the elastic launcher, one node, own rendezvous
WORKER_ENV = "LOWRANK_WORKER"  # module name or path of a .py file to run instead (tests use a fake worker)
NVML_WAIT_SECONDS = 5.0
EXIT_WAIT_SECONDS = 30.0  # after the grace: a worker that recorded its stop gets this long more to exit


# ---------------------------------------------------------------- the run's processes


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
    skip = own_lineage()
    for proc in psutil.process_iter():
        if proc.pid in found or proc.pid in skip:
            continue
        try:
            if carries_run(proc, run.run_id):
                found[proc.pid] = proc
            elif born is not None and group and proc.create_time() >= born - CREATE_TIME_TOLERANCE and (
                    os.getpgid(proc.pid) == group or os.getsid(proc.pid) == session):
                # the group/session id stays reserved while any member lives, so a member
                # born after our worker belongs to it
                found[proc.pid] = proc
        except (psutil.Error, OSError):
            continue
    return {pid: proc for pid, proc in found.items() if _alive(proc)}


# ---------------------------------------------------------------- start


def worker_command(run: RunDir, *, resume: bool = False, python: str = sys.executable,
                   worker: str | None = None, nproc: int = 1, rendezvous: Any = None) -> list[str]:
    """The worker's argv: ``python -m lowrank.train RUN_DIR [--resume]``; with ``nproc`` > 1 the
    same worker under torchrun, one rank per process; with a ``rendezvous``
    (:class:`console.backends.nodes.Rendezvous`) torchrun's static rendezvous of several machines."""
    worker = worker or os.environ.get(WORKER_ENV) or WORKER_MODULE
    target = [worker] if worker.endswith(".py") else ["-m", worker]
    if rendezvous is not None:
        launcher = [*TORCHRUN[:2], *rendezvous.torchrun_args(), "--nproc-per-node", str(nproc)]
    else:
        launcher = [*TORCHRUN, "--nproc-per-node", str(nproc)] if nproc > 1 else []
    return [python, *launcher, *target, str(run.path), *(["--resume"] if resume else [])]


def run_nproc(run: RunDir) -> int:
    """The run's data-parallel ranks (``resources.nproc`` of its config; 1 when unreadable)."""
    with contextlib.suppress(Exception):
        resources = run.read_config().get("resources")
        nproc = resources.get("nproc", 1) if isinstance(resources, Mapping) else 1
        if isinstance(nproc, int) and not isinstance(nproc, bool) and nproc >= 1:
            return nproc
    return 1


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


def worker_environment(run: RunDir, gpus: list[int] | None,
                       extra_env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment a launcher gives the run's worker (or torchrun): the run's id, its home,
    unbuffered output, and ``gpus`` as CUDA_VISIBLE_DEVICES (None: inherited); ``extra_env`` last."""
    env = dict(os.environ)
    env.update({"PYTHONUNBUFFERED": "1", RUN_ENV: run.run_id, "LOWRANK_HOME": str(run.home),
                "CUDA_DEVICE_ORDER": "PCI_BUS_ID"})
    if gpus is not None:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(index) for index in gpus)
    env.update(extra_env or {})
    return env


def start_worker(run: RunDir, *, gpus: list[int] | None = None, resume: bool = False,
                 python: str = sys.executable, extra_env: Mapping[str, str] | None = None,
                 worker: str | None = None, rendezvous: Any = None) -> int:
    """Launch the run's worker in its own session; returns its pid.

    ``rendezvous``: this host is node 0 of a run on several machines (console.backends.nodes).

    ``gpus``: the GPU indices to expose (``[]`` = CPU only, ``None`` = choose free GPUs
    now as the scheduler would, or inherit the environment where NVML sees no GPU).
    The run must be queued (or resumable); a run whose worker is alive is refused.
    """
    run = RunDir(Path(run.path).resolve())
    if gpus is None:
        gpus = _choose_gpus(run)
    env = worker_environment(run, gpus, extra_env)
    nproc = run_nproc(run)
    command = worker_command(run, resume=resume, python=python, worker=worker, nproc=nproc, rendezvous=rendezvous)
    if rendezvous is not None:
        shape = {**rendezvous.status_fields(nproc), "launcher": "torchrun", "rank_pids": None, "nodes": None}
    else:
        shape = {"world_size": nproc, "launcher": "torchrun", "rank_pids": None} if nproc > 1 else {}

    with locked_status(run) as status:
        state = status.get("state")
        if worker_process(status) is not None:  # whatever the state says: never two workers on one dir
            orphans = live_carriers(run.run_id)
            if "launched" not in status and orphans:  # it recorded itself, its launcher never did: adopt it
                return _adopt(run, status, orphans)
            raise UserError(f"run {run.run_id} is already running (pid {status.get('pid')})",
                            hint=f"lowrank kill {run.run_id}")
        orphans = live_carriers(run.run_id)
        if orphans:  # a launcher died between starting a worker and recording it: adopt that worker
            return _adopt(run, status, orphans)
        if state in FINAL_STATES and not resume:
            raise UserError(f"run {run.run_id} has already ended ({state})",
                            hint=f"lowrank relaunch {run.run_id} [--resume]")
        with open(run.file(LOG_FILE), "ab") as log:
            log.write(f"\n=== {now_iso()} launch{' --resume' if resume else ''} on {socket.gethostname()} "
                      f"gpus={gpus if gpus is not None else 'inherited'}: {' '.join(command)}\n".encode())
            log.flush()
            proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True, close_fds=True, env=env)
        fault_point("launcher-started-worker")  # tests: the launcher dies before recording its worker
        status.update(state="running", pid=proc.pid, pgid=proc.pid, sid=proc.pid, **identity_fields(proc.pid),
                      gpus=gpus, launcher_host=socket.gethostname(), launcher_pid=os.getpid(), launched=now_iso(),
                      command=command, cwd=os.getcwd(), attempt=int(status.get("attempt") or 0) + 1,
                      launch_epoch=int(status.get("epoch") or 0) if resume else 0, resume=resume,
                      exit_code=None, ended=None, error=None, kill_requested=None, waiting=None,
                      **shape)
    threading.Thread(target=_reap, args=(run, proc), name=f"reap-{proc.pid}", daemon=True).start()
    return proc.pid


def _adopt(run: RunDir, status: dict[str, Any], orphans: list[psutil.Process]) -> int:
    """Record a live, unrecorded worker of this run as its worker (called under the status lock)
    instead of starting a second one: the run's first process (its oldest carrier whose parent
    does not carry the run) becomes ``pid``; its session and group are the run's."""
    pids = {proc.pid for proc in orphans}
    top = next((proc for proc in orphans if _parent_pid(proc) not in pids), orphans[0])
    try:
        group, session = os.getpgid(top.pid), os.getsid(top.pid)
    except OSError:
        group = session = top.pid
    status.update(state="running", pid=top.pid, pgid=group, sid=session, **identity_fields(top.pid),
                  launched=status.get("launched") or now_iso(), launcher_host=socket.gethostname(),
                  adopted=now_iso(), exit_code=None, ended=None, error=None, kill_requested=None, waiting=None)
    return top.pid


def _parent_pid(proc: psutil.Process) -> int | None:
    try:
        return proc.ppid()
    except psutil.Error:
        return None


def _choose_gpus(run: RunDir) -> list[int] | None:
    """GPUs for a run started directly (no queue): what the scheduler would assign now."""
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
    to ``grace`` seconds (plus :data:`EXIT_WAIT_SECONDS` once it has written that status and
    is only slow to exit), then SIGKILL to all processes of the run still alive (``force``
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
            if run.read_status().get("state") in FINAL_STATES:
                # it stopped at a step and recorded so: only its exit is slow (torch's interpreter
                # teardown, torchrun's agent waiting for its ranks, on a loaded host): let it finish
                if _wait_gone([worker], EXIT_WAIT_SECONDS):
                    report.message = f"worker stopped but had not exited {grace + EXIT_WAIT_SECONDS:g}s after SIGTERM; "
            else:
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
    deadline = time.monotonic() + wait
    while True:
        snap = gpus_mod.snapshot(pid_to_run={})
        if not snap.has_gpus:
            return
        report.nvml_checked = True
        left = sorted(set(report.pids) & set(gpus_mod.gpu_pids(snap)))
        report.gpu_pids_left = left
        if not left or time.monotonic() >= deadline:
            return
        time.sleep(0.2)


# ---------------------------------------------------------------- the backend


class LocalBackend(Backend):
    """Process groups on this host: :func:`start_worker`, :func:`kill_run`, pid + create time."""

    name = "local"

    def start(self, run: RunDir, *, gpus: list[int] | None = None, resume: bool = False,
              extra_env: Mapping[str, str] | None = None, rendezvous: Any = None) -> int:
        return start_worker(run, gpus=gpus, resume=resume, extra_env=extra_env, rendezvous=rendezvous)

    def kill(self, run: RunDir, *, grace: float = 10.0, force: bool = False) -> KillReport:
        return kill_run(run, grace=grace, force=force)

    def alive(self, status: Mapping[str, Any]) -> bool | None:
        if (status.get("launcher_host") or status.get("host")) not in (None, socket.gethostname()):
            return None  # another host's process: cannot be checked from here
        return worker_process(status) is not None

    def resume(self, run: RunDir, *, gpus: list[int] | None = None) -> int:
        return self.start(relaunch(run, resume=True), gpus=gpus, resume=True)
