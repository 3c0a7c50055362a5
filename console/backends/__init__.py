"""Backends behind one interface (:class:`console.backends.base.Backend`): where a run's
worker runs. A registry, not an if-chain: a run's ``backend`` (status.json, default
``local``) names its entry; a backend module is imported only when a run needs it.
"""

from __future__ import annotations

import importlib
from typing import Any, Mapping

from lowrank.errors import UserError
from lowrank.rundir import RunDir

from console.backends.base import Backend, KillReport
from console.runs import RECONCILERS

__all__ = ["Backend", "KillReport", "DEFAULT", "REGISTRY", "names", "get", "of_status", "for_run",
           "register_reconcilers"]

DEFAULT = "local"
REGISTRY: dict[str, str] = {  # name -> "module:class"
    "local": "console.backends.local:LocalBackend",
    "slurm": "console.backends.slurm:SlurmBackend",
}
_instances: dict[str, Backend] = {}


def names() -> list[str]:
    return sorted(REGISTRY)


def get(name: str | None) -> Backend:
    """The backend called ``name`` (None = local); an unknown name is a UserError."""
    name = name or DEFAULT
    if name not in REGISTRY:
        raise UserError(f"unknown backend {name!r}", key="resources.backend", hint=f"one of: {', '.join(names())}")
    if name not in _instances:
        module, _, cls = REGISTRY[name].partition(":")
        _instances[name] = getattr(importlib.import_module(module), cls)()
    return _instances[name]


def of_status(status: Mapping[str, Any]) -> Backend:
    """The backend that runs (or will run) the run with this status."""
    return get(status.get("backend"))


def for_run(run: RunDir) -> Backend:
    """The backend of this run (its status.json ``backend``)."""
    return of_status(run.read_status())


def _reconciler(name: str):
    def reconcile(run: RunDir, status: dict[str, Any]) -> dict[str, Any]:
        return get(name).reconcile(run, status)  # the backend module is imported on first use
    return reconcile


def register_reconcilers() -> None:
    """Let the store reconcile each non-local run through its backend (console.runs.RECONCILERS).

    Done when this package is imported; the CLI and the console call it at start, so ``ls``
    and the runs table show a Slurm run's state as Slurm sees it."""
    for name in REGISTRY:
        if name != DEFAULT:
            RECONCILERS.setdefault(name, _reconciler(name))


register_reconcilers()
