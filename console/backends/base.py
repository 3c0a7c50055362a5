"""The one interface every backend implements, and what a kill reports.

A backend turns a queued run directory into a running worker (``python -m lowrank.train
RUN_DIR``, the same program everywhere) and stops it again. The run directory is the
only contract: the worker writes its status and metrics there whichever backend started
it, so ``ls``, ``logs``, ``compare show`` and the console need no backend of their own.
"""

from __future__ import annotations

import abc
import dataclasses
from pathlib import Path
from typing import Any, Mapping

from lowrank.rundir import RunDir


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


class Backend(abc.ABC):
    """Start, kill, poll and resume runs in one place (this host, a Slurm cluster, ...)."""

    name: str = ""

    @abc.abstractmethod
    def start(self, run: RunDir, *, gpus: list[int] | None = None, resume: bool = False,
              extra_env: Mapping[str, str] | None = None) -> int | str:
        """Start the queued run's worker; returns its handle (a pid, a job id)."""

    @abc.abstractmethod
    def kill(self, run: RunDir, *, grace: float = 10.0, force: bool = False) -> KillReport:
        """Stop the run and everything it started; it ends ``killed``."""

    @abc.abstractmethod
    def alive(self, status: Mapping[str, Any]) -> bool | None:
        """Whether the run's worker (or job) still exists; None when this backend cannot tell."""

    @abc.abstractmethod
    def resume(self, run: RunDir) -> int | str:
        """Re-queue an ended run in place and start it from its checkpoint."""

    def check(self, config: Mapping[str, Any], home: Path | None = None) -> None:
        """Refuse (UserError) a run this backend cannot start, before its directory exists."""

    def waiting(self, status: Mapping[str, Any]) -> str | None:
        """Why a queued run of this backend has not started, in its words (None: nothing to say)."""
        return None

    def describe(self, handle: int | str) -> str:
        """How a handle that :meth:`start` returned is shown (``pid 123``, ``Slurm job 42``)."""
        return f"pid {handle}"

    def start_many(self, runs: list[RunDir], *, resume: bool = False) -> list[int | str]:
        """Start several queued runs (a sweep); a cluster backend submits them together."""
        return [self.start(run, resume=resume) for run in runs]

    def reconcile(self, run: RunDir, status: dict[str, Any]) -> dict[str, Any]:
        """The run's status brought up to date with what this backend knows (default: as is)."""
        return status
