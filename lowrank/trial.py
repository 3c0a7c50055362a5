"""The worker's side of a hyperparameter-search trial: report each evaluation, stop if pruned.

A run is a trial when its directory holds ``tune.json`` (written by ``lowrank tune``)::

    {"storage": "journal:/home/.../studies/wd-lr.journal", "study": "wd-lr",
     "trial_id": 7, "trial_number": 7, "metric": "best_val_err1",
     "pruner": {"name": "hyperband", "min_resource": 1, "max_resource": 9, "reduction_factor": 3}}

Everything the worker needs is in the run directory, so a trial runs the same on every
backend (this host, a Slurm node reading a journal on a shared filesystem, a database
URL). Only a trial imports optuna, and only when the loop starts: an ordinary run never
does. After each evaluation the loop calls :meth:`TrialReporter.report`; the value goes to
the study (``trial.report``) and, when the study's pruner says so, :class:`Pruned` is
raised at that epoch boundary (after the epoch's checkpoint), and the worker ends the run
in the final state ``pruned``. The driver (``lowrank tune``) tells the study how each
trial ended from its run's status, so a worker never finishes a trial itself.

Objectives (what a study minimises) and pruners are registries; this module imports
neither torch nor optuna at import time, so the console may use its names.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any, Callable, Mapping

from .errors import UserError
from .registry import Registry

TUNE_FILE = "tune.json"
JOURNAL_PREFIX = "journal:"
SQLITE_TIMEOUT_SECONDS = 60  # for a user's sqlite:/// storage: wait for the write lock instead of failing


class Pruned(Exception):
    """Raised by :meth:`TrialReporter.report` at an epoch boundary when the pruner stops the trial."""

    def __init__(self, epoch: int, value: float) -> None:
        super().__init__(f"pruned by the study's pruner at epoch {epoch} ({value:.4g})")
        self.epoch, self.value = epoch, value


# ---------------------------------------------------------------- objectives


class Objective:
    """What a study minimises: ``intermediate`` maps (this eval's val metrics, best val err1 so far)
    to the value reported at that epoch; ``final`` reads the value from a run's status/summary."""

    def __init__(self, description: str, intermediate: Callable[[Mapping[str, float], float], float],
                 key: str) -> None:
        self.description, self.intermediate, self.key = description, intermediate, key

    def final(self, status: Mapping[str, Any]) -> float | None:
        value = status.get(self.key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return None
        return float(value)


OBJECTIVES: Registry[Objective] = Registry("metric")
OBJECTIVES.add("best_val_err1", Objective("best validation top-1 error % so far (minimised)",
                                          lambda val, best: best, "best_val_err1"))
OBJECTIVES.add("final_val_err1", Objective("validation top-1 error % at the last evaluation (minimised)",
                                           lambda val, best: val["err1"], "final_val_err1"))


def objective(name: str) -> Objective:
    try:
        return OBJECTIVES.get(name)
    except KeyError as error:
        raise UserError(str(error.args[0]), key="--metric") from None


# ---------------------------------------------------------------- pruners (optuna imported when built)


def _hyperband(spec: Mapping[str, Any]):
    import optuna

    return optuna.pruners.HyperbandPruner(min_resource=int(spec.get("min_resource", 1)),
                                          max_resource=int(spec["max_resource"]),
                                          reduction_factor=int(spec.get("reduction_factor", 3)))


def _median(spec: Mapping[str, Any]):
    import optuna

    return optuna.pruners.MedianPruner(n_startup_trials=int(spec.get("n_startup_trials", 5)),
                                       n_warmup_steps=int(spec.get("n_warmup_steps", 0)))


def _no_pruner(spec: Mapping[str, Any]):
    import optuna

    return optuna.pruners.NopPruner()


PRUNERS: Registry[Callable[[Mapping[str, Any]], Any]] = Registry("pruner")
PRUNERS.add("hyperband", _hyperband)
PRUNERS.add("median", _median)
PRUNERS.add("none", _no_pruner)


def build_pruner(spec: Mapping[str, Any]):
    """The optuna pruner a study's ``pruner`` spec (``{"name": ..., options}``) describes."""
    try:
        return PRUNERS.get(str(spec.get("name")))(spec)
    except KeyError as error:
        raise UserError(str(error.args[0]), key="--pruner") from None


# ---------------------------------------------------------------- storage


def open_storage(url: str):
    """An optuna storage for ``url``: ``journal:PATH`` is a JournalFileBackend log (the default
    of ``lowrank tune``); anything else is an RDB URL (sqlite:///..., postgresql://...).

    Why a journal file by default: several workers (``--parallel K`` here, Slurm jobs
    elsewhere) write the same study at once. SQLite through SQLAlchemy fails such writers
    with "database is locked" once its busy timeout passes (optuna issue #820 and its
    FAQ); Optuna's journal file appends each operation under a lock file created with
    O_EXCL (JournalFileOpenLock: safe on NFSv3+), so concurrent writers wait for one another
    instead of failing, it needs no database, and it works on a cluster's shared filesystem.
    A user's sqlite:/// URL gets a long busy timeout for the same reason.
    """
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

    if url.startswith(JOURNAL_PREFIX):
        path = str(Path(url[len(JOURNAL_PREFIX):]).expanduser())
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(path, lock_obj=JournalFileOpenLock(path)))
    kwargs = {"connect_args": {"timeout": SQLITE_TIMEOUT_SECONDS}} if url.startswith("sqlite") else {}
    return optuna.storages.RDBStorage(url, engine_kwargs=kwargs)


# ---------------------------------------------------------------- the worker's reporter


def read_tune_file(path: Path) -> dict[str, Any] | None:
    """tune.json as a dict, None when absent; a file that is not a trial description is a UserError."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as error:
        raise UserError(f"cannot read the trial description ({error})", file=str(path)) from None
    missing = [key for key in ("storage", "study", "trial_id", "metric", "pruner") if key not in data] \
        if isinstance(data, dict) else ["an object"]
    if missing:
        raise UserError(f"not a trial description: missing {missing[0]}", file=str(path),
                        hint="remove it to train the run as an ordinary run")
    return data


class TrialReporter:
    """Reports a trial run's evaluations to its study and raises :class:`Pruned` when pruned."""

    def __init__(self, spec: Mapping[str, Any]) -> None:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.spec = dict(spec)
        self.objective = objective(str(spec["metric"]))
        study = optuna.load_study(study_name=str(spec["study"]), storage=open_storage(str(spec["storage"])),
                                  pruner=build_pruner(spec["pruner"]))
        self.trial = optuna.trial.Trial(study, int(spec["trial_id"]))
        self.broken: str | None = None  # the study refused a report (trial already told): stop reporting

    @classmethod
    def for_run(cls, run_path: Path) -> "TrialReporter | None":
        """The reporter of the run at ``run_path``, or None when the run is not a trial."""
        spec = read_tune_file(Path(run_path) / TUNE_FILE)
        return None if spec is None else cls(spec)

    def report(self, epoch: int, val: Mapping[str, float], best_err1: float, *, may_prune: bool = True) -> None:
        """Report this evaluation (step = epoch); raise :class:`Pruned` if the pruner stops the trial
        (never when ``may_prune`` is false: the last epoch, where stopping saves nothing)."""
        if self.broken:
            return
        value = float(self.objective.intermediate(val, best_err1))
        try:
            self.trial.report(value, epoch)
            prune = may_prune and self.trial.should_prune()
        except Exception as error:  # e.g. the trial was already told (a driver marked it failed): keep training
            self.broken = f"{type(error).__name__}: {error}"
            print(f"warning: the study refused the report of epoch {epoch} ({self.broken}); "
                  f"training on without pruning", file=sys.stderr, flush=True)
            return
        if prune:
            raise Pruned(epoch, value)
