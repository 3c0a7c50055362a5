"""How a trial's run is started: through the same queue as every run, on the chosen backend.

A trial is an ordinary run directory; launching it is the backend's business, behind one
function ``submit(run, requirement)``. ``local`` is the scheduler of this home
(:func:`console.scheduler.submit`); ``slurm`` is the cluster backend of
``console/backends/slurm.py`` when it is installed. The worker finds everything it needs
for pruning in the run directory (tune.json), so it behaves the same on every backend.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from typing import Any, Callable

from lowrank.errors import UserError
from lowrank.registry import Registry

SLURM_MODULE = "console.backends.slurm"


def _local(run, requirement) -> None:
    from console.scheduler import submit

    submit(run, requirement)


def _slurm_module():
    if importlib.util.find_spec("console.backends") is None or importlib.util.find_spec(SLURM_MODULE) is None:
        raise UserError("--backend slurm is not available: the Slurm backend (console/backends/slurm.py, "
                        "issue 13) has not landed in this version of lowrank", key="--backend",
                        hint="use --backend local")
    return importlib.import_module(SLURM_MODULE)


def _slurm(run, requirement) -> None:
    module = _slurm_module()
    submit = getattr(module, "submit", None)
    if submit is None:
        raise UserError(f"{SLURM_MODULE} has no submit(run, requirement)", key="--backend", hint="use --backend local")
    submit(run, requirement)


BACKENDS: Registry[Callable[[Any, Any], None]] = Registry("backend")
BACKENDS.add("local", _local)
BACKENDS.add("slurm", _slurm)
AVAILABLE: dict[str, Callable[[], Any]] = {"local": lambda: None, "slurm": _slurm_module}


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
