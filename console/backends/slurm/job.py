"""What runs inside the Slurm job: submitit calls :class:`SlurmWorker` on the node.

It starts the ordinary worker, ``python -m lowrank.train RUN_DIR [--resume]`` (the same
program as on this host), with stdout+stderr appended to the run's ``output.log``, waits for
it and records the job's side of the run (slurm_state, node, attempt) in status.json.

Time limits and preemption: sbatch's ``--signal=USR2@signal_delay_s`` makes Slurm send
SIGUSR2 to every process of the job step before the limit. The worker (told by
``LOWRANK_PREEMPT_SIGNAL``) stops at the next step; submitit's handler in this process calls
:meth:`SlurmWorker.checkpoint`, which waits for the worker, moves the attempt into the run's
``previous_attempts``, queues the run again and hands submitit a copy of itself with
``resume=True``; submitit then ``scontrol requeue``-s the job and the next attempt resumes
from the checkpoint the worker wrote when it stopped (at that step, as on a kill). Past
``slurm.max_requeues`` time limits submitit refuses to requeue and the run fails.

A job Slurm requeued by itself (``SLURM_RESTART_COUNT`` > 0, e.g. a node failure) resumes
from the checkpoint too. One-node multi-task jobs (``resources.nproc`` > 1): every task runs one
worker with the torch.distributed environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR,
MASTER_PORT from submitit's TorchDistributedEnvironment); rank 0 writes output.log and the
job's status, the others ``output.rank<R>.log``.

Jobs on several nodes (``slurm.nodes`` N > 1): one task per node (``--ntasks-per-node 1``), each
a torchrun launcher, ``python -m torch.distributed.run --nnodes N --nproc-per-node nproc
--rdzv-backend c10d --rdzv-endpoint FIRST:PORT``: the c10d rendezvous is hosted by the first
node of the allocation (``scontrol show hostnames``, its NodeAddr; PORT from the job id and
restart count), which the rendezvous makes group rank 0 or not as it likes -- so task 0 (the first
node) claims the run and records the attempt, rank 0 wherever it lands writes the run directory
and its own output to output.log (``LOWRANK_MAIN_LOG``), and each node's launcher writes its
agent's and ranks' output to ``output.node<I>.log``. The agents ignore the pre-limit signal (it
would end a torchrun agent); every rank gets it from Slurm and stops at the same step. Task 0 waits
for rank 0's record of the stop (``preempted``) or of the end before it requeues or ends the job.

This module runs on the compute node: it imports nothing of the login side but the store.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import submitit
from submitit.core.utils import UncompletedJobError

from lowrank.rundir import CHECKPOINT_FILE, FINAL_STATES, LOG_FILE, RunDir, now_iso

from console.runs import RUN_ENV, locked_status

WORKER_MODULE = "lowrank.train"
WORKER_ENV = "LOWRANK_WORKER"  # module name or .py file run instead of the worker (tests), as on this host
PREEMPT_ENV = "LOWRANK_PREEMPT_SIGNAL"  # lowrank.train.worker reads it
POLL = 0.2
TORCHRUN = ["-m", "torch.distributed.run"]
END_WAIT_S = 120.0  # task 0 of a job on several nodes: how long it waits for rank 0 (elsewhere) to record the end


def preempt_signal_name() -> str:
    """The signal submitit asks sbatch for (``--signal=USR2@N``) and handles: USR2 unless configured."""
    return submitit.JobEnvironment.USR_SIG


def worker_argv(run_path: str, resume: bool, python: str) -> list[str]:
    """``python -m lowrank.train RUN_DIR [--resume]`` (or the ``LOWRANK_WORKER`` stand-in)."""
    worker = os.environ.get(WORKER_ENV) or WORKER_MODULE
    target = [worker] if worker.endswith(".py") else ["-m", worker]
    return [python, *target, run_path, *(["--resume"] if resume else [])]


def node_argv(run_path: str, resume: bool, python: str, *, nodes: int, nproc: int, node: int, endpoint: str,
              rdzv_id: str) -> list[str]:
    """This node's torchrun launcher: ``nproc`` ranks, c10d rendezvous at ``endpoint`` (hosted by node 0)."""
    worker = worker_argv(run_path, resume, python)
    return [python, *TORCHRUN, "--nnodes", str(nodes), "--nproc-per-node", str(nproc), "--rdzv-backend", "c10d",
            "--rdzv-endpoint", endpoint, "--rdzv-id", rdzv_id, "--rdzv-conf", f"is_host={1 if node == 0 else 0}",
            "--max-restarts", "0", *worker[1:]]


def _scontrol(*args: str) -> str:
    try:
        done = subprocess.run(["scontrol", *args], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.SubprocessError):
        return ""
    return done.stdout if done.returncode == 0 else ""


def rendezvous_endpoint(job: Any, restart: int) -> str:
    """``HOST:PORT`` of the c10d rendezvous: the first node of the allocation (``scontrol show
    hostnames``) at the address Slurm reaches it by (its NodeAddr), a port drawn from the job id
    and the restart count (every node draws the same one; a requeued attempt a new one)."""
    names = _scontrol("show", "hostnames", os.environ.get("SLURM_JOB_NODELIST", "")).split() or list(job.hostnames)
    first = names[0]
    address = first
    for field in _scontrol("--oneliner", "show", "node", first).split():
        if field.startswith("NodeAddr=") and field.split("=", 1)[1]:
            address = field.split("=", 1)[1]
    port = random.Random(f"{job.job_id}:{restart}").randint(20000, 60000)
    return f"{address}:{port}"


def _ignore(signame: str):
    """A preexec_fn: the child (torchrun's agent, and its ranks until they install their own handler)
    ignores the pre-limit signal, which would otherwise end the agent."""
    signum = getattr(signal, f"SIG{signame}")
    return lambda: signal.signal(signum, signal.SIG_IGN)


class SlurmWorker(submitit.helpers.Checkpointable):
    """The submitted callable: one run's worker in this Slurm job (one per task)."""

    def __init__(self, run_path: str, *, resume: bool = False, python: str = sys.executable,
                 env: dict[str, str] | None = None, grace_s: float = 60.0, nodes: int = 1, nproc: int = 1) -> None:
        self.run_path = run_path
        self.resume = resume
        self.python = python
        self.env = dict(env or {})
        self.grace_s = grace_s  # how long checkpoint() waits for the worker to stop
        self.nodes = nodes  # > 1: one torchrun launcher per node, nproc ranks each
        self.nproc = nproc
        self._proc: subprocess.Popen | None = None
        self._code: int | None = None

    def __getstate__(self) -> dict[str, Any]:  # the live process stays behind
        return {**self.__dict__, "_proc": None, "_code": None}

    # ---------------------------------------------------------------- the job's run

    def __call__(self) -> dict[str, Any]:
        run = RunDir(Path(self.run_path))
        job = submitit.JobEnvironment()
        rank, world = job.global_rank, job.num_tasks
        restart = int(os.environ.get("SLURM_RESTART_COUNT") or 0)
        resume = self.resume or (restart > 0 and run.file(CHECKPOINT_FILE).exists())
        if rank == 0 and not self._claim(run, job.job_id, restart, resume):
            return {"run_id": run.run_id, "state": run.read_status().get("state"), "skipped": True}
        if self.nodes > 1:  # this node's torchrun launcher; its agent's and ranks' output in its own log
            env = self._node_environment(run)
            argv = node_argv(self.run_path, resume, self.python, nodes=self.nodes, nproc=self.nproc, node=rank,
                             endpoint=rendezvous_endpoint(job, restart), rdzv_id=f"lowrank-{job.job_id}-{restart}")
            log_name, preexec = f"output.node{rank}.log", _ignore(preempt_signal_name())
            where = f"node {rank}/{self.nodes} ({os.environ.get('SLURMD_NODENAME') or socket.gethostname()})"
            if rank == 0:
                with open(run.file(LOG_FILE), "ab") as log:
                    log.write(f"\n=== {now_iso()} Slurm job {job.job_id} (restart {restart}) on {self.nodes} nodes "
                              f"({os.environ.get('SLURM_JOB_NODELIST', '?')}) x {self.nproc} rank(s): one torchrun "
                              f"per node, each node's output in output.node<I>.log, rank 0's below: "
                              f"{' '.join(argv)}\n".encode())
        else:
            env = self._environment(run, job, world)
            argv = worker_argv(self.run_path, resume, self.python)
            log_name, preexec = LOG_FILE if rank == 0 else f"output.rank{rank}.log", None
            where = f"task {rank}/{world}"
        with open(run.file(log_name), "ab") as log:
            log.write(f"\n=== {now_iso()} Slurm job {job.job_id} (restart {restart}) {where} on "
                      f"{socket.gethostname()}: {' '.join(argv)}\n".encode())
            log.flush()
            # not a new session: Slurm's process tracking must see (and signal) the worker
            self._proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                          close_fds=True, env=env, preexec_fn=preexec)
        if rank == 0:
            self._record_process(run)
        threading.Thread(target=self._reap, name="reap-worker", daemon=True).start()
        try:
            while self._code is None:  # sleep, not wait(): submitit's signal handler runs in between
                time.sleep(POLL)
        except UncompletedJobError as error:  # the signal came and submitit will not requeue
            if rank == 0:
                self._not_requeued(run, str(error))
            raise
        return self._ended(run, rank)

    def _claim(self, run: RunDir, job_id: str, restart: int, resume: bool) -> bool:
        """Mark the run as this job's (running in Slurm); False when the job should not run it."""
        with locked_status(run) as status:
            if status.get("slurm_job_id") not in (None, job_id):
                return False  # the run was submitted again since: that job owns it
            if status.get("state") in FINAL_STATES:
                if status.get("kill_requested") or restart <= int(status.get("slurm_restarts") or 0):
                    return False  # killed (or ended) before this job got to start
                # Slurm requeued the job by itself (node failure, preemption without our signal)
                _push_attempt(status, reason=f"Slurm requeued the job (restart {restart})")
                status.update(state="queued", ended=None, error=None, exit_code=None)
            status.update(slurm_state="RUNNING", slurm_node=os.environ.get("SLURMD_NODENAME") or socket.gethostname(),
                          slurm_restarts=restart, attempt=int(status.get("attempt") or 0) + 1, launched=now_iso(),
                          resume=resume, launch_epoch=int(status.get("epoch") or 0) if resume else 0,
                          launcher_host=socket.gethostname(), exit_code=None, ended=None, error=None, preempted=None)
            if self.nodes > 1:  # rank 0 fills in rank_pids and nodes once every rank has joined
                status.update(slurm_nodes=_scontrol("show", "hostnames", os.environ.get("SLURM_JOB_NODELIST", ""))
                              .split() or None, nnodes=self.nodes, world_size=self.nodes * self.nproc,
                              launcher="torchrun", rank_pids=None, rank_hosts=None, nodes=None)
        return True

    def _environment(self, run: RunDir, job: Any, world: int) -> dict[str, str]:
        env = dict(os.environ)
        env.update(self.env)
        env.update({"PYTHONUNBUFFERED": "1", RUN_ENV: run.run_id, "LOWRANK_HOME": str(run.home),
                    PREEMPT_ENV: preempt_signal_name()})
        env.setdefault("OMP_NUM_THREADS", os.environ.get("SLURM_CPUS_PER_TASK") or "1")
        if world > 1 or job.num_nodes > 1:  # one task per rank: torch.distributed's env:// rendezvous
            dist = submitit.helpers.TorchDistributedEnvironment()
            env.update({"MASTER_ADDR": dist.master_addr, "MASTER_PORT": str(dist.master_port),
                        "RANK": str(dist.rank), "WORLD_SIZE": str(dist.world_size),
                        "LOCAL_RANK": str(dist.local_rank), "LOCAL_WORLD_SIZE": str(dist.local_world_size),
                        "LOWRANK_LAUNCHER": "slurm"})
        return env

    def _node_environment(self, run: RunDir) -> dict[str, str]:
        """This node's launcher: torchrun sets each rank's RANK, WORLD_SIZE, LOCAL_RANK, MASTER_*."""
        env = dict(os.environ)
        env.update(self.env)
        env.update({"PYTHONUNBUFFERED": "1", RUN_ENV: run.run_id, "LOWRANK_HOME": str(run.home),
                    PREEMPT_ENV: preempt_signal_name(), "LOWRANK_LAUNCHER": "slurm",
                    "LOWRANK_MAIN_LOG": str(run.file(LOG_FILE))})
        cpus = int(os.environ.get("SLURM_CPUS_PER_TASK") or self.nproc)
        env.setdefault("OMP_NUM_THREADS", str(max(1, cpus // self.nproc)))  # the task's CPUs shared by its ranks
        for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
            env.pop(key, None)  # torchrun's to set
        return env

    def _wait_recorded(self, run: RunDir, timeout: float, *, stop: bool = False) -> dict[str, Any]:
        """Wait (a job on several nodes) until rank 0, which may be on another node, has recorded the
        end of the run (or, ``stop``, its stop for a requeue: ``preempted``); returns the status."""
        deadline = time.monotonic() + timeout
        while True:
            status = run.read_status()
            if status.get("state") in FINAL_STATES or (stop and status.get("preempted")) or self.nodes <= 1 \
                    or time.monotonic() >= deadline:
                return status
            time.sleep(POLL)

    def _record_process(self, run: RunDir) -> None:
        try:
            create_time = psutil.Process(self._proc.pid).create_time()
        except psutil.Error:
            create_time = None
        with locked_status(run) as status:
            status.update(pid=self._proc.pid, create_time=create_time)

    def _reap(self) -> None:
        self._code = self._proc.wait()

    def _ended(self, run: RunDir, rank: int) -> dict[str, Any]:
        """The worker exited: record what it did not; a failed worker fails the Slurm job."""
        code = self._code
        state = None
        if rank == 0:
            if code == 0:
                self._wait_recorded(run, END_WAIT_S)  # rank 0 may be on another node, still writing the end
            with locked_status(run) as status:
                if status.get("state") not in FINAL_STATES:
                    how = f"signal {signal.Signals(-code).name}" if code < 0 else f"code {code}"
                    logs = LOG_FILE + (" and output.node<I>.log" if self.nodes > 1 else "")
                    status.update(state="failed", ended=now_iso(), exit_code=code,
                                  error=f"worker exited with {how} without recording a final state (see {logs})")
                state = status.get("state")
        if code != 0:
            raise RuntimeError(f"worker of {run.run_id} exited with code {code} (state {state})")
        return {"run_id": run.run_id, "state": state, "exit_code": code}

    # ---------------------------------------------------------------- time limit / preemption

    def checkpoint(self, *args: Any, **kwargs: Any) -> submitit.helpers.DelayedSubmission | None:
        """Called by submitit (rank 0) on Slurm's signal: stop the worker at a step, queue the run again,
        and return the callable of the next attempt (resume from the checkpoint); None = do not requeue."""
        run = RunDir(Path(self.run_path))
        proc = self._proc
        began = time.monotonic()
        if proc is not None and self._code is None:
            signum = getattr(signal, f"SIG{preempt_signal_name()}")
            targets = [proc.pid]
            if self.nodes > 1:  # the agent ignores it: its ranks are the ones to stop
                try:
                    targets = [child.pid for child in psutil.Process(proc.pid).children()]
                except psutil.Error:
                    targets = []
            for pid in targets:
                try:
                    os.kill(pid, signum)  # they got Slurm's too: idempotent
                except OSError:
                    pass
            deadline = began + self.grace_s
            while self._code is None and time.monotonic() < deadline:
                time.sleep(POLL)
        # every rank stopped at the same step; rank 0 (perhaps on another node) writes the checkpoint
        self._wait_recorded(run, max(0.0, self.grace_s - (time.monotonic() - began)), stop=True)
        with locked_status(run) as status:
            if status.get("state") in FINAL_STATES:
                return None  # it finished (or was killed) meanwhile: nothing to resume
            _push_attempt(status, reason="Slurm time limit or preemption signal", exit_code=self._code,
                          epoch=_last_epoch(run))
            status.update(state="queued", slurm_state="REQUEUED", resume=True, pid=None, create_time=None,
                          exit_code=None, ended=None, error=None, requeued=now_iso())
        return submitit.helpers.DelayedSubmission(
            SlurmWorker(self.run_path, resume=True, python=self.python, env=self.env, grace_s=self.grace_s,
                        nodes=self.nodes, nproc=self.nproc))

    def _not_requeued(self, run: RunDir, why: str) -> None:
        with locked_status(run) as status:
            if status.get("state") not in FINAL_STATES:
                status.update(state="failed", ended=now_iso(), exit_code=self._code,
                              error=f"stopped at the Slurm time limit and not requeued: {why} "
                                    f"(lowrank relaunch {run.run_id} --resume continues it)")


def _last_epoch(run: RunDir) -> int | None:
    """The last epoch metrics.jsonl says was trained (status.json's epoch may lag it)."""
    epochs = [event.get("epoch") for event in run.read_metrics() if event.get("event") == "epoch"]
    return epochs[-1] if epochs and isinstance(epochs[-1], int) else None


def _push_attempt(status: dict[str, Any], *, reason: str, exit_code: int | None = None,
                  epoch: int | None = None) -> None:
    """Append the attempt that just ended to ``previous_attempts`` (the run's history)."""
    history = list(status.get("previous_attempts") or [])
    history.append({"state": "requeued", "epoch": epoch if epoch is not None else status.get("epoch"),
                    "ended": now_iso(),
                    "exit_code": exit_code if exit_code is not None else status.get("exit_code"),
                    "error": status.get("error"), "reason": reason, "slurm_job_id": status.get("slurm_job_id"),
                    "attempt": status.get("attempt"), "world_size": status.get("world_size") or 1,
                    "slurm_nodes": status.get("slurm_nodes") or ([status["slurm_node"]] if status.get("slurm_node")
                                                                 else None)})
    status["previous_attempts"] = history
