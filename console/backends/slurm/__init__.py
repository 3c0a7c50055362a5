"""The Slurm backend: a run's worker as a Slurm job, submitted through submitit.

``start`` submits :class:`console.backends.slurm.job.SlurmWorker` (which runs the ordinary
worker, ``python -m lowrank.train RUN_DIR [--resume]``) with the run's ``slurm:`` section as
sbatch options; ``start_many`` submits several runs as one job array (a compare sweep;
``slurm.array_parallelism`` of them at once). status.json records ``backend: slurm``,
``slurm_job_id`` (``42``, or ``42_3`` for an array task), ``slurm_array_job_id`` and
``slurm_state``; submitit's files (sbatch script, pickles, the job's own log) live in
``$LOWRANK_HOME/slurm/``, the worker's output in the run's ``output.log`` as on this host.

``reconcile`` (called by the run store for every Slurm run it lists) maps Slurm's state onto
the run's: PENDING and the other waiting states -> queued, RUNNING -> running, and a job
that ended without the worker recording a final state -> killed (CANCELLED) or failed
(TIMEOUT, PREEMPTED, NODE_FAIL, OUT_OF_MEMORY, FAILED, COMPLETED ...), the Slurm state kept
in ``slurm_state`` and shown by ``ls`` and the console. ``kill`` is ``scancel``.

``slurm.nodes`` N > 1 is one job on N nodes: one task per node, each a torchrun launcher of
``resources.nproc`` ranks (c10d rendezvous on the first node; :mod:`.job`), world size N x nproc;
``slurm.cpus_per_task`` is then the CPUs of each rank (the node's task gets nproc times as many).
A partition with fewer than N nodes is refused before anything is created.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any, Mapping

from lowrank.errors import UserError
from lowrank.rundir import FINAL_STATES, RunDir, now_iso

from console.backends.base import Backend, KillReport
from console.runs import locked_status, relaunch

from . import state as slurm_state
from .job import SlurmWorker, preempt_signal_name
from .shared_fs import check_shared, partition_nodes

FOLDER = "slurm"  # under LOWRANK_HOME: submitit's sbatch scripts, pickles and job logs (%j = job id)
ENV_KEYS = ("PYTHONPATH", "LOWRANK_HOME", "LOWRANK_WORKER", "OMP_NUM_THREADS", "LOWRANK_FAULT")
KILL_WAIT_S = 60.0  # after scancel: how long the job may take to leave squeue (Slurm's KillWait and more)
LIMIT_CHECK_S = 30  # Slurm looks at time limits this often, and signals once the limit is within delay + this


def _unavailable() -> UserError:
    return UserError("Slurm is not available on this host (no sbatch/squeue on PATH)", key="resources.backend",
                     hint="run from a Slurm login node (contributors: sudo .ci/slurm_setup.sh), or use "
                          "resources.backend=local")


def signal_delay(time_min: int, wanted: int) -> int:
    """Seconds before the limit for Slurm's signal: ``wanted``, but at most half of what the limit
    leaves after Slurm's check interval, so every attempt trains for a while before it is signalled.

    Slurm signals once the limit is within ``delay + LIMIT_CHECK_S``: a 1-minute limit with the
    default 120 s would signal each attempt as it starts, and the run would use up its requeues
    without training."""
    return max(1, min(wanted, (time_min * 60 - LIMIT_CHECK_S) // 2))


def run_shape(config: Mapping[str, Any]) -> tuple[int, int]:
    """(nodes, ranks per node) of a run's job: ``slurm.nodes`` and ``resources.nproc``."""
    return int((config.get("slurm") or {}).get("nodes") or 1), int((config.get("resources") or {}).get("nproc") or 1)


def executor_parameters(config: Mapping[str, Any], run_name: str) -> dict[str, Any]:
    """submitit SlurmExecutor parameters from a run's config (``slurm:`` and ``resources.nproc``):
    one task per rank on one node; on several nodes one task per node (a torchrun launcher)."""
    slurm = dict(config.get("slurm") or {})
    time_min = int(slurm.get("time") or 60)
    nodes, nproc = run_shape(config)
    extra = {str(key).replace("_", "-"): value for key, value in (slurm.get("extra") or {}).items()}
    if slurm.get("mem"):
        extra.setdefault("mem", slurm["mem"])  # as written (16G): submitit's own mem wants GB as a number
    params = {"job_name": f"lowrank-{run_name}"[:120], "time": time_min,
              "nodes": nodes, "ntasks_per_node": nproc if nodes == 1 else 1,
              "signal_delay_s": signal_delay(time_min, int(slurm.get("signal_delay_s") or 120)),
              "array_parallelism": int(slurm.get("array_parallelism") or 64),
              "additional_parameters": extra}
    for key in ("partition", "cpus_per_task", "account", "qos", "constraint"):
        if slurm.get(key) is not None:
            params[key] = slurm[key]
    if slurm.get("gpus_per_node"):
        params["gpus_per_node"] = int(slurm["gpus_per_node"])
    if nodes > 1 and (nproc > 1 or slurm.get("cpus_per_task")):  # the node's one task runs all its ranks
        params["cpus_per_task"] = nproc * int(slurm.get("cpus_per_task") or 1)
    return params


class SlurmBackend(Backend):
    """Runs as Slurm jobs: submitit to submit, squeue/scontrol/sacct to follow, scancel to kill."""

    name = "slurm"

    # ---------------------------------------------------------------- start

    def check(self, config: Mapping[str, Any], home: Path | None = None) -> None:
        """Slurm reachable from here, and a LOWRANK_HOME the job's nodes can see (else UserError)."""
        from lowrank.rundir import lowrank_home

        if not slurm_state.available():
            raise _unavailable()
        partition = (config.get("slurm") or {}).get("partition")
        nodes, _ = run_shape(config)
        if nodes > 1:
            names = partition_nodes(partition)
            if names is not None and len(names) < nodes:
                where = f"partition {partition}" if partition else "the default partition"
                raise UserError(f"slurm.nodes is {nodes} but {where} has {len(names)} node(s) ({', '.join(names)})",
                                key="slurm.nodes", hint=f"ask for at most {len(names)} (--nodes), or a partition with "
                                                        f"more nodes (slurm.partition; `sinfo` lists them)")
        check_shared(Path(home or lowrank_home()), partition)

    def start(self, run: RunDir, *, gpus: list[int] | None = None, resume: bool = False,
              extra_env: Mapping[str, str] | None = None) -> str:
        return self.start_many([run], resume=resume, extra_env=extra_env)[0]

    def start_many(self, runs: list[RunDir], *, resume: bool = False,
                   extra_env: Mapping[str, str] | None = None) -> list[str]:
        """Submit the runs: runs with the same ``slurm:`` section (and nproc) as one job array."""
        if not slurm_state.available():
            raise _unavailable()
        groups: dict[str, list[tuple[int, RunDir]]] = {}
        for index, run in enumerate(runs):
            config = run.read_config()
            key = json.dumps([config.get("slurm"), (config.get("resources") or {}).get("nproc")], sort_keys=True,
                             default=str)
            groups.setdefault(key, []).append((index, RunDir(Path(run.path).resolve())))
        job_ids: list[str] = [""] * len(runs)
        for members in groups.values():
            for index, job_id in zip([i for i, _ in members], self._submit([run for _, run in members], resume,
                                                                            extra_env)):
                job_ids[index] = job_id
        return job_ids

    def _submit(self, runs: list[RunDir], resume: bool, extra_env: Mapping[str, str] | None) -> list[str]:
        import submitit

        first = runs[0]
        config = first.read_config()
        params = executor_parameters(config, first.run_id if len(runs) == 1 else f"sweep-{first.run_id}")
        warning = check_shared(first.home, params.get("partition"))
        wanted = int((config.get("slurm") or {}).get("signal_delay_s") or 120)
        if params["signal_delay_s"] < wanted:
            print(f"note: Slurm will signal {params['signal_delay_s']} s before the {params['time']}-minute limit "
                  f"(slurm.signal_delay_s {wanted} leaves too little of it to train)", file=sys.stderr)
        env = {key: value for key, value in os.environ.items() if key in ENV_KEYS}
        env.update(extra_env or {})
        env["LOWRANK_HOME"] = str(first.home)
        folder = first.home / FOLDER
        executor = submitit.SlurmExecutor(folder=folder / "%j", max_num_timeout=int(
            (config.get("slurm") or {}).get("max_requeues", 3)), python=shlex.quote(sys.executable))
        setup = [f"export {key}={shlex.quote(value)}" for key, value in sorted(env.items())]
        executor.update_parameters(setup=setup, **params)
        grace = max(5.0, params["signal_delay_s"] - 10.0)
        nodes, nproc = run_shape(config)
        for run in runs:
            self._prepare(run, resume, folder)
        try:
            with executor.batch():
                jobs = [executor.submit(SlurmWorker(str(run.path), resume=resume, python=sys.executable, env=env,
                                                    grace_s=grace, nodes=nodes, nproc=nproc)) for run in runs]
        except Exception as error:  # sbatch refused (bad partition, time over the limit, ...): say why
            message = str(error).strip().splitlines()
            detail = next((line for line in message if "error" in line.lower()), message[-1] if message else "")
            for run in runs:
                run.update_status(state="failed", ended=now_iso(), error=f"sbatch refused the job: {detail}")
            raise UserError(f"sbatch refused the job: {detail}", key="slurm",
                            hint="check the slurm: section (partition, time, account, ...) against `sinfo`") from None
        slurm_state.forget()
        for run, job in zip(runs, jobs):
            with locked_status(run) as status:
                status.update(slurm_job_id=str(job.job_id), slurm_folder=str(job.paths.folder),
                              slurm_log=str(job.paths.stdout), slurm_signal=preempt_signal_name())
                if "_" in str(job.job_id):
                    status["slurm_array_job_id"] = str(job.job_id).split("_", 1)[0]
                if status.get("slurm_state") is None:  # the job may already have started and said RUNNING
                    status["slurm_state"] = "PENDING"
                if warning:
                    status["slurm_warning"] = warning
        if warning:
            print(warning, file=sys.stderr)
        return [str(job.job_id) for job in jobs]

    @staticmethod
    def _prepare(run: RunDir, resume: bool, folder: Path) -> None:
        """Check the run may be submitted and mark it queued in Slurm (before sbatch: a fast job may start)."""
        with locked_status(run) as status:
            state = status.get("state")
            job = status.get("slurm_job_id")
            if state == "running" or (job and slurm_state.job_state(job) in slurm_state.ACTIVE_STATES):
                raise UserError(f"run {run.run_id} is already in Slurm (job {job}, {status.get('slurm_state')})",
                                hint=f"lowrank kill {run.run_id}")
            if state in FINAL_STATES and not resume:
                raise UserError(f"run {run.run_id} has already ended ({state})",
                                hint=f"lowrank relaunch {run.run_id} [--resume]")
            status.update(state="queued", backend="slurm", slurm_job_id=None, slurm_array_job_id=None,
                          slurm_state=None, slurm_warning=None, pid=None, create_time=None, kill_requested=None,
                          submitted=now_iso(), resume=resume, exit_code=None, ended=None, error=None)
        folder.mkdir(parents=True, exist_ok=True)

    def describe(self, handle: int | str) -> str:
        return f"Slurm job {handle}"

    def waiting(self, status: Mapping[str, Any]) -> str | None:
        """``waiting in Slurm: job 42_3 PENDING (Resources)``: Slurm's own reason, never this host's queue."""
        job = status.get("slurm_job_id")
        if not job:
            return "not yet submitted to Slurm"
        reason = slurm_state.pending_reason(str(job)) if slurm_state.available() else None
        return f"waiting in Slurm: job {job} {status.get('slurm_state') or 'PENDING'}" + (f" ({reason})" if reason
                                                                                          else "")

    # ---------------------------------------------------------------- follow

    def alive(self, status: Mapping[str, Any]) -> bool | None:
        job = status.get("slurm_job_id")
        if not job:
            return False
        found = slurm_state.job_state(str(job))
        if found is None:
            return None if not slurm_state.available() else False
        return found in slurm_state.ACTIVE_STATES

    def reconcile(self, run: RunDir, status: dict[str, Any]) -> dict[str, Any]:
        """Bring a Slurm run's status in line with its job (see the module docstring)."""
        job = status.get("slurm_job_id")
        recorded = status.get("slurm_state")
        if not job or (status.get("state") in FINAL_STATES and recorded in slurm_state.ENDED_STATES | {"UNKNOWN"}):
            return status
        if status.get("state") not in (*FINAL_STATES, "queued", "running") or not slurm_state.available():
            return status  # unreadable, or no Slurm to ask from this host
        found = slurm_state.job_state(str(job))
        with locked_status(run) as fresh:
            if fresh.get("slurm_job_id") != job:
                return dict(fresh)  # submitted again meanwhile
            state = fresh.get("state")
            if found is None:
                if state in FINAL_STATES:
                    fresh["slurm_state"] = "UNKNOWN"  # purged (MinJobAge) and not in accounting
                elif recorded is not None:  # submitted and then forgotten by Slurm, unfinished
                    fresh.update(state="failed", ended=now_iso(), slurm_state="UNKNOWN",
                                 error=f"Slurm job {job} is gone (not in squeue, scontrol or sacct) and the worker "
                                       f"recorded no final state; see {run.file('output.log')}")
                return dict(fresh)
            fresh["slurm_state"] = found
            meant = slurm_state.run_state(found)
            if meant in ("queued", "running") and state in ("queued", "running"):
                if state != meant and slurm_state.job_state(str(job), fresh=True) == found:  # not a stale listing
                    fresh["state"] = meant
            elif found in slurm_state.ENDED_STATES:
                if state not in FINAL_STATES:
                    fresh.update(state=meant, ended=now_iso(), error=_ended_error(found, job, fresh))
                elif state == "killed" and not fresh.get("kill_requested") and meant == "failed":
                    # the worker stopped on Slurm's SIGTERM at the time limit / node failure: not a user's kill
                    fresh.update(state="failed", error=f"{_ended_error(found, job, fresh)} ({fresh.get('error')})")
            return dict(fresh)

    # ---------------------------------------------------------------- kill, resume

    def kill(self, run: RunDir, *, grace: float = 10.0, force: bool = False) -> KillReport:
        """``scancel`` the run's job, wait until it leaves squeue; the run ends ``killed``."""
        import subprocess

        began = time.monotonic()
        with locked_status(run) as status:
            report = KillReport(run.run_id, state_before=status.get("state"))
            job = status.get("slurm_job_id")
            if status.get("state") in FINAL_STATES:
                report.state, report.message = status.get("state"), "already ended"
                return report
            status["kill_requested"] = now_iso()
            if not job:
                status.update(state="killed", ended=now_iso(), error="cancelled before it was submitted to Slurm")
                report.state, report.message = "killed", "cancelled (not yet submitted)"
                return report
        if not slurm_state.available():
            raise _unavailable()
        done = subprocess.run(["scancel", str(job)], capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            report.message = f"scancel {job} failed: {done.stderr.strip()}; "
        slurm_state.forget()
        deadline = time.monotonic() + max(grace, 0.0) + KILL_WAIT_S
        left = slurm_state.job_state(str(job), fresh=True)
        while left in slurm_state.ACTIVE_STATES and time.monotonic() < deadline:
            time.sleep(0.5)
            left = slurm_state.job_state(str(job), fresh=True)
        with locked_status(run) as final:
            if left is not None:
                final["slurm_state"] = left
            if final.get("state") not in FINAL_STATES:
                final.update(state="killed", ended=now_iso(),
                             error=f"killed by lowrank kill (scancel {job})")
            report.state = final.get("state")
            pid = final.get("pid")
        if left in slurm_state.ACTIVE_STATES:
            report.survivors = [int(pid or 0)]
            report.message += f"Slurm job {job} is still {left} after scancel"
        else:
            report.message += f"Slurm job {job} cancelled ({left or 'gone'})"
        report.seconds = time.monotonic() - began
        return report

    def resume(self, run: RunDir, *, gpus: list[int] | None = None) -> str:
        return self.start(relaunch(run, resume=True), resume=True)


def _ended_error(found: str, job: str, status: Mapping[str, Any]) -> str:
    what = {"CANCELLED": "was cancelled in Slurm", "TIMEOUT": "hit its time limit", "PREEMPTED": "was preempted",
            "NODE_FAIL": "lost its node", "OUT_OF_MEMORY": "ran out of memory",
            "COMPLETED": "completed but the worker recorded no final state"}.get(found, f"ended {found}")
    return f"Slurm job {job} {what} ({found}); see {status.get('slurm_log') or 'the job log'}"
