"""How a trial's run is started: through the same queue as every run, on the chosen backend.

A trial is an ordinary run directory; launching it is the backend's business, behind one
function ``submit(run, requirement)``. ``local`` is the scheduler of this home
(:func:`console.scheduler.submit`); ``slurm`` queues a run whose status.json names
``backend: slurm`` (set when the run is created), which the backends layer of issue 13
(``console.backends``: a run's ``backend`` names its entry) starts on the cluster. The worker finds everything it needs
for pruning in the run directory (tune.json), so it behaves the same on every backend.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from typing import Any, Callable

from lowrank.errors import UserError
from lowrank.registry import Registry

def _local(run, requirement) -> None:
    from console.scheduler import submit

    submit(run, requirement)


def _slurm_available() -> None:
    """The Slurm backend is registered in ``console.backends`` (issue 13), or one UserError."""
    registry = None
    if importlib.util.find_spec("console.backends") is not None:
        registry = getattr(importlib.import_module("console.backends"), "REGISTRY", None)
    if not registry or "slurm" not in registry:
        raise UserError("--backend slurm is not available: the Slurm backend (console/backends/, issue 13) has "
                        "not landed in this version of lowrank", key="--backend", hint="use --backend local")


def _slurm(run, requirement) -> None:
    """A run whose status says ``backend: slurm`` goes through the same queue; the backends
    layer (console.backends: a run's ``backend`` field names its entry) starts it on Slurm."""
    _slurm_available()
    from console.scheduler import submit

    submit(run, requirement)


BACKENDS: Registry[Callable[[Any, Any], None]] = Registry("backend")
BACKENDS.add("local", _local)
BACKENDS.add("slurm", _slurm)
AVAILABLE: dict[str, Callable[[], Any]] = {"local": lambda: None, "slurm": _slurm_available}


def check_backend(name: str) -> str:
    """``name`` if it is a backend that can launch trials here; else one UserError (nothing created)."""
    if name not in BACKENDS:
        raise UserError(f"unknown backend {name!r}", key="--backend", hint=f"backends: {', '.join(BACKENDS.names())}")
    AVAILABLE[name]()
    return name


def submit_trial(backend: str, run, requirement) -> None:
    """Queue ``run`` on ``backend``."""
    BACKENDS.get(backend)(run, requirement)


def allow_parallel_cpu_runs(parallel: int) -> None:
    """Let a scheduler that this process starts run ``parallel`` CPU trials at once.

    The scheduler's default is one CPU run per two cores; ``--parallel K`` asks for K
    trials at a time, so unless the user set LOWRANK_MAX_CPU_RUNS themselves the
    scheduler we start gets K (a scheduler already serving this home keeps its limit).
    """
    from console.scheduler import MAX_CPU_RUNS_ENV, default_max_cpu_runs

    if MAX_CPU_RUNS_ENV not in os.environ and parallel > default_max_cpu_runs(os.cpu_count() or 1):
        os.environ[MAX_CPU_RUNS_ENV] = str(parallel)
