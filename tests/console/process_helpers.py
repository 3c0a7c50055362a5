"""Shared by the tests that check a run leaves no process behind: the host's live processes that
carry a run's ``LOWRANK_RUN_ID`` (every process a launcher starts, torchrun's agents and ranks,
DataLoader workers), read from /proc by psutil, independently of the backends' own sweep."""

from __future__ import annotations

import psutil

from console.runs import RUN_ENV


def marked_processes(run_id: str) -> list[int]:
    """Live processes (not zombies) anywhere on the host carrying the run's marker."""
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.environ().get(RUN_ENV) == run_id and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc.pid)
        except psutil.Error:
            continue
    return found
