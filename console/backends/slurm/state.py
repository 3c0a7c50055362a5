"""What Slurm says about a job, and how its states map onto a run's.

One ``squeue`` call lists every active job of this user (cached for a moment, so ``ls``
over a hundred Slurm runs asks once); a job no longer in it is looked up with
``scontrol show job`` (recent jobs, until ``MinJobAge``) and then ``sacct`` (accounting,
where the cluster keeps it). ``None`` means Slurm does not know the job (or cannot be
asked): the callers decide what that means.
"""

from __future__ import annotations

import shutil
import subprocess
import time

# Slurm job states (squeue %T / scontrol JobState / sacct State) and the run state each means
QUEUED_STATES = frozenset({"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING", "RESV_DEL_HOLD",
                           "SPECIAL_EXIT"})
RUNNING_STATES = frozenset({"RUNNING", "COMPLETING", "SUSPENDED", "SIGNALING", "STAGE_OUT", "STOPPED", "RESIZING"})
ACTIVE_STATES = QUEUED_STATES | RUNNING_STATES
# a job that ended: the run's final state when the worker recorded none (COMPLETED without a
# final state means the worker never said how it ended: failed, not finished)
FINAL_MAP = {"CANCELLED": "killed", "COMPLETED": "failed", "FAILED": "failed", "TIMEOUT": "failed",
             "PREEMPTED": "failed", "NODE_FAIL": "failed", "OUT_OF_MEMORY": "failed", "BOOT_FAIL": "failed",
             "DEADLINE": "failed", "REVOKED": "failed"}
ENDED_STATES = frozenset(FINAL_MAP)
CACHE_SECONDS = 2.0
COMMAND_TIMEOUT = 30.0

_cache: tuple[float, dict[str, str]] | None = None


def available() -> bool:
    """Whether this host can talk to a Slurm cluster (``sbatch`` and ``squeue`` on PATH)."""
    return shutil.which("sbatch") is not None and shutil.which("squeue") is not None


def run_state(slurm_state: str) -> str | None:
    """The run state a Slurm state means: queued, running, or the final state (None: unknown)."""
    if slurm_state in QUEUED_STATES:
        return "queued"
    if slurm_state in RUNNING_STATES:
        return "running"
    return FINAL_MAP.get(slurm_state)


def _run(argv: list[str]) -> str | None:
    """stdout of a Slurm command, or None when it fails or is missing."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=COMMAND_TIMEOUT, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def active_jobs(*, fresh: bool = False) -> dict[str, str] | None:
    """job id (``42``, array task ``42_3``) -> state of every job of this user in squeue; None
    when squeue cannot be asked. Cached for :data:`CACHE_SECONDS` unless ``fresh``."""
    global _cache
    if not fresh and _cache is not None and time.monotonic() - _cache[0] < CACHE_SECONDS:
        return _cache[1]
    out = _run(["squeue", "--me", "--noheader", "--array", "--format=%i|%T"])
    if out is None:
        return None
    jobs = {}
    for line in out.splitlines():
        job_id, _, state = line.strip().partition("|")
        if job_id:
            jobs[job_id] = state.strip()
    _cache = (time.monotonic(), jobs)
    return jobs


def forget() -> None:
    """Drop the cached squeue listing (after a submit or a cancel)."""
    global _cache
    _cache = None


def pending_reason(job_id: str) -> str | None:
    """Why Slurm has not started the job (squeue's REASON: ``Resources``, ``Priority``, ...); None if unknown."""
    out = _run(["squeue", "--noheader", "--array", "--jobs", job_id, "--format=%r"])
    reason = (out or "").strip().splitlines()
    return reason[0].strip() if reason and reason[0].strip() not in ("", "None") else None


def ended_state(job_id: str) -> str | None:
    """The state of a job that left squeue: scontrol (recent jobs), then sacct; None if neither knows it."""
    out = _run(["scontrol", "--oneliner", "show", "job", job_id])
    if out:
        for field in out.split():
            if field.startswith("JobState="):
                return field.split("=", 1)[1]
    out = _run(["sacct", "--noheader", "--parsable2", "--allocations", "--jobs", job_id, "--format=JobID,State"])
    for line in reversed((out or "").splitlines()):  # the latest record of a requeued job is last
        found, _, state = line.partition("|")
        if found == job_id and state:
            return state.split()[0]  # "CANCELLED by 0" -> CANCELLED
    return None


def job_state(job_id: str, *, fresh: bool = False) -> str | None:
    """The job's Slurm state now (active or ended); None when Slurm does not know it or cannot be asked."""
    jobs = active_jobs(fresh=fresh)
    if jobs is not None and job_id in jobs:
        return jobs[job_id]
    state = ended_state(job_id)  # also answers when squeue's cached listing is a moment old
    return state
