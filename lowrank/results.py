"""The results.csv row of a finished run, written exactly once even across a crash.

Durable record first: the worker writes status ``finished`` with the whole summary and
``results_written: false``, then appends the row, then sets ``results_written: true``.
A worker killed between those steps leaves a status that says a row is owed; any reader
(``lowrank ls``, the run store) calls :func:`repair_results`, which appends the missing
row. :func:`write_result` checks under the results lock whether the run already has a row,
so the worker and a repairing reader, or two readers, never write it twice.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Iterable

from .rundir import CONFIG_FILE, RESULT_COLUMNS, RESULTS_FILE, RunDir, budget_of, file_lock, write_row_locked


ROW_STATES = ("finished", "pruned")  # the final states that get a results.csv row (a pruned trial: its best so far)


def results_row(run: RunDir, status: dict[str, Any]) -> dict[str, Any]:
    """The row of a finished run, from its status (which holds the summary) and config."""
    from .run_files import load_config

    config = load_config(run.file(CONFIG_FILE))[0]  # what can be read: a corrupt config.yaml must not stop ls
    train = config.get("train") or {}
    return {**{key: status.get(key) for key in RESULT_COLUMNS},
            "run_id": run.run_id, "name": config.get("name"), "sweep": status.get("sweep"),
            "state": status.get("state") if status.get("state") in ROW_STATES else "finished", "model": (config.get("model") or {}).get("name"),
            "dataset": (config.get("data") or {}).get("name"), "budget": budget_of(config, status),
            "epochs": train.get("epochs"), "seed": train.get("seed"),
            "ended": status.get("ended"), "run_dir": str(run.path)}


def _has_row(path: Path, run_id: str) -> bool:
    try:
        with open(path, encoding="utf-8", errors="replace", newline="") as handle:
            return any(row and row[0] == run_id for row in csv.reader(handle))
    except FileNotFoundError:
        return False


def write_result(run: RunDir, status: dict[str, Any], home: Path | None = None) -> bool:
    """Append the run's row to ``home/results.csv`` unless it has one; True if written now."""
    home = Path(home or run.home)
    home.mkdir(parents=True, exist_ok=True)
    path = home / RESULTS_FILE
    row = results_row(run, status)
    with file_lock(home / ".results.lock"):
        if _has_row(path, run.run_id):
            return False
        write_row_locked(path, row)
    return True


def owes_row(status: dict[str, Any]) -> bool:
    """A finished run whose results row may be missing (its worker died before confirming it)."""
    return status.get("state") in ROW_STATES and status.get("results_written") is False


def repair_results(runs: Iterable[tuple[RunDir, dict[str, Any]]], home: Path | None = None) -> list[str]:
    """Write the owed row of every finished run that lacks one; returns their run ids."""
    repaired = []
    for run, status in runs:
        if not owes_row(status):
            continue
        if write_result(run, status, home):
            repaired.append(run.run_id)
        run.update_status(results_written=True)
    return repaired
