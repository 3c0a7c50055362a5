"""Deterministic fault injection for the crash-window tests: ``LOWRANK_FAULT=<point>[,<point>]``.

A process that reaches a named point listed in ``$LOWRANK_FAULT`` SIGKILLs itself there,
exactly as a power cut or the OOM killer would - no cleanup, no final write. Only the
tests set the variable; unset (always, in real use) :func:`fault_point` is one dict lookup.

Points (grep ``fault_point(`` for the list):
  worker-finished          after status.json says ``finished``, before the results.csv row
  worker-result-appended   after the row, before status records ``results_written``
  worker-stop-checkpoint   after the checkpoint written on SIGTERM/SIGINT, before state ``killed``
  launcher-started-worker  the local launcher, after starting a worker, before recording it

:func:`armed` names misbehaviours other than a SIGKILL, asked once by the code that stages them:
  nan-loss@rank<R>         data-parallel rank R's loss is NaN from its 3rd step (the other ranks
                           are fine: the run must still fail on every rank)
"""

from __future__ import annotations

import os
import signal

FAULT_ENV = "LOWRANK_FAULT"


def fault_point(name: str) -> None:
    """SIGKILL this process now if ``name`` is one of the points in ``$LOWRANK_FAULT``."""
    spec = os.environ.get(FAULT_ENV)
    if spec and name in (part.strip() for part in spec.split(",")):
        os.kill(os.getpid(), signal.SIGKILL)


def armed(name: str) -> bool:
    """Whether ``name`` is one of the points in ``$LOWRANK_FAULT`` (checked once, outside hot loops)."""
    spec = os.environ.get(FAULT_ENV)
    return bool(spec) and name in (part.strip() for part in spec.split(","))
