"""The search loop: ask the study for a trial, give it a run, queue it, tell the study how it ended.

:func:`plan_study` checks everything (space, metric, pruner, method and budget, backend,
the preset with both ends of every range, the host) and returns a manifest without
creating anything. :func:`create_study` writes the optuna study and the manifest.
:func:`drive` then keeps ``parallel`` trials in flight: for each, ``study.ask`` samples
the space, the trial's config is the preset + overrides + the sampled values (with
``--method/--budget``, the method's hp solved for the budget on the meta device, per
trial, and pinned), and its run directory is created with ``tune.json`` (storage, study,
trial id, metric, pruner) before its status -- so the worker, on any backend, can report
each evaluation and be pruned -- and queued on the backend. When a run reaches a final
state the driver tells the study: ``finished`` -> its metric, ``pruned`` -> PRUNED (its
last reported value), ``failed``/``killed``/gone -> FAIL. The driver is the only one that
tells, and :func:`settle` is idempotent, so ``tune resume`` and ``tune show`` can settle
trials whose driver was interrupted.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from lowrank.errors import BudgetError, ConfigError, UserError
from lowrank.rundir import RunDir, lowrank_home, now_iso, runs_root
from lowrank.trial import PRUNERS, TUNE_FILE, objective

from . import study as studies
from .backends import allow_parallel_cpu_runs, check_backend, submit_trial
from .space import Param, check_space, overrides_for, parse_space, space_from_dicts

POLL_SECONDS = 1.0
Event = Callable[[str], None]


# ---------------------------------------------------------------- plan (nothing created)


def _budget_overrides(method: str | None, budget: float | None) -> list[str]:
    out = [f"substitute.method={method}"] if method else []
    if budget is not None:
        out += ["substitute.hp=null", "substitute.budget_params=null", f"substitute.budget={budget!r}"]
    return out


def _check_method(method: str | None, budget: float | None) -> None:
    if method:
        from lowrank.catalogue import catalogue

        known = sorted(catalogue().methods)
        if method not in known:
            raise UserError(f"unknown method {method!r}", key="--method", hint=f"known methods: {', '.join(known)}")
    if budget is not None and not 0 < budget <= 1:
        raise UserError(f"budget {budget:g} is not a fraction in (0, 1] of the dense network's parameters",
                        key="--budget", hint="e.g. --budget 0.1")


def plan_study(preset: str | Path, *, space: Sequence[str], trials: int, overrides: Sequence[str] = (),
               metric: str = "best_val_err1", pruner: str = "hyperband", method: str | None = None,
               budget: float | None = None, backend: str = "local", parallel: int = 1, storage: str | None = None,
               name: str | None = None, seed: int | None = None, requirement: Mapping[str, Any] | None = None,
               home: Path | None = None, precheck_placement: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Validate a study and return its manifest; a bad input is one UserError and nothing is created."""
    from lowrank.config import load
    from lowrank.extras import check_config, check_storage_url

    home = Path(home or lowrank_home()).resolve()
    if trials < 1:
        raise UserError(f"--trials must be >= 1, got {trials}", key="--trials")
    if parallel < 1:
        raise UserError(f"--parallel must be >= 1, got {parallel}", key="--parallel")
    params = parse_space(space)
    objective(metric)
    if pruner not in PRUNERS:
        raise UserError(f"unknown pruner {pruner!r}", key="--pruner", hint=f"pruners: {', '.join(PRUNERS.names())}")
    _check_method(method, budget)
    check_backend(backend)
    fixed = [*overrides, *_budget_overrides(method, budget)]
    base = load(preset, fixed)  # the preset and overrides themselves: errors name the file and key
    check_space(params, lambda extra: check_config(_load_space(preset, fixed, extra, params)))
    if storage:
        check_storage_url(storage)  # its database driver is installed: before the study exists
    searched = {param.key for param in params}
    if method and any(key.startswith("substitute.method") for key in searched):
        raise UserError("--method fixes substitute.method; do not also search it", key="--space")
    if budget is not None:
        _solvable(load(preset, [*fixed, *overrides_for({p.key: p.ends()[0] for p in params})]))
    from console.precheck import precheck

    precheck(base, source=preset, overrides=list(overrides), network=False, backend=backend,
             **dict(precheck_placement or {}))
    from console.scheduler import resolve_requirement

    resolve_requirement(base.to_dict(), requirement)  # bad placement flags: refused now
    name = studies.check_name(name, home) if name else studies.new_study_name(base.name)
    epochs = _max_epochs(preset, fixed, params)
    pruner_spec: dict[str, Any] = {"name": pruner}
    if pruner == "hyperband":
        pruner_spec.update(min_resource=1, max_resource=epochs, reduction_factor=3)
    elif pruner == "median":
        pruner_spec.update(n_startup_trials=min(5, max(1, trials // 3)), n_warmup_steps=0)
    return {"study": name, "created": now_iso(), "preset": str(preset), "preset_path": str(Path(preset).resolve()),
            "preset_name": base.name, "overrides": list(overrides), "space": [param.to_dict() for param in params],
            "metric": metric, "direction": "minimize", "pruner": pruner_spec, "method": method, "budget": budget,
            "backend": backend, "parallel": parallel, "requirement": dict(requirement or {}), "seed": seed,
            "storage": storage or studies.default_storage(name, home), "trials_requested": trials,
            "epochs": epochs, "trials": {}}


def _load_space(preset, fixed: list[str], extra: list[str], params: Sequence[Param]):
    """The preset with a point of the space; an error about a searched key names ``--space``."""
    from lowrank.config import load

    try:
        return load(preset, [*fixed, *extra])
    except ConfigError as error:
        key = error.key or ""
        if any(key == p.key or key.startswith(f"{p.key}.") or p.key.startswith(f"{key}.") for p in params):
            error.file = "--space"
            error.args = (error.render(),)
        raise


def _max_epochs(preset, fixed: list[str], params: Sequence[Param]) -> int:
    """The longest a trial trains (Hyperband's max_resource): train.epochs, or its largest searched value."""
    from lowrank.config import load

    for param in params:
        if param.key == "train.epochs":
            return int(max(int(end) for end in param.ends()))
    return int(load(preset, fixed).train.epochs)


def _solvable(config) -> None:
    """The budget can be met at the space's low end (a quick meta-device solve): else refuse now."""
    _solve(config)


def _solve(config):
    """The network of ``config`` built on the meta device (the budget solved); BudgetError if unreachable."""
    import torch

    from lowrank.build import build_network
    from lowrank.data import dataset_shape

    num_classes, input_shape = dataset_shape(config.data)
    with torch.device("meta"):
        return build_network(config, num_classes, input_shape, device="meta")


def create_study(manifest: dict[str, Any], home: Path | None = None) -> None:
    """Create the optuna study and write the manifest (the study first: a manifest always has one)."""
    try:
        studies.create_study(manifest)
    except UserError:
        raise
    except Exception as error:  # a storage URL that cannot be opened (driver missing, server down, bad path)
        raise UserError(f"cannot open the storage {manifest['storage']!r}: {type(error).__name__}: {error}",
                        key="--storage", hint="an optuna storage URL (sqlite:///f.db, postgresql://...) or "
                                              "journal:/shared/path/study.journal") from None
    with studies.manifest_lock(manifest["study"], home):
        studies.write_manifest(manifest, home)


# ---------------------------------------------------------------- one trial's run


def trial_config(manifest: Mapping[str, Any], number: int, params: Mapping[str, Any]) -> dict[str, Any]:
    """The resolved config of trial ``number``: preset + overrides + its values (hp pinned for a budget)."""
    from lowrank.config import from_dict, load

    config = load(manifest["preset_path"], [*manifest.get("overrides", []),
                                            *_budget_overrides(manifest.get("method"), manifest.get("budget")),
                                            *overrides_for(params)])
    data = config.to_dict()
    data["name"] = f"{manifest['study']}-t{number}"
    if manifest.get("budget") is not None:
        net = _solve(config)  # per trial: the space may change the network (width, depth ...)
        data["substitute"].update(hp=net.hp, budget=None, budget_params=None)
    return from_dict(data, source=f"trial {number} of {manifest['study']}").to_dict()


def start_trial(manifest: Mapping[str, Any], trial, home: Path) -> str:
    """Create trial ``trial``'s run (tune.json before status.json) and queue it; returns the run id."""
    from console.scheduler import resolve_requirement

    number = trial.number
    params = dict(trial.params)
    config = trial_config(manifest, number, params)
    need = resolve_requirement(config, manifest.get("requirement") or None)
    tune = {"storage": manifest["storage"], "study": manifest["study"], "trial_id": trial._trial_id,
            "trial_number": number, "metric": manifest["metric"], "pruner": manifest["pruner"], "params": params}
    run = RunDir.create(config, home=home, files={TUNE_FILE: json.dumps(tune, indent=2)}, extra_status={
        "preset": manifest.get("preset"), "study": manifest["study"], "trial": number, "tune_params": params,
        "tune_budget": manifest.get("budget"), "requirement": need.to_dict(),
        **({"backend": manifest["backend"]} if manifest.get("backend") not in (None, "local") else {})})
    trial.set_user_attr("run_id", run.run_id)
    studies.record_trial(manifest["study"], number, run.run_id, home, params=params)
    submit_trial(manifest.get("backend") or "local", run, need)
    return run.run_id


# ---------------------------------------------------------------- telling the study


def run_state(run_id: str | None, home: Path) -> tuple[str, dict[str, Any]]:
    """(state, status) of a trial's run; ``vanished`` when its directory is gone."""
    from console.runs import reconcile

    if not run_id:
        return "vanished", {"error": "the trial got no run"}
    run = RunDir(runs_root(home) / run_id)
    status = run.read_status()
    if not status:
        return "vanished", {"error": f"run directory {run.path} is missing"}
    status = reconcile(run, status)
    return str(status.get("state")), status


def settle(study, trial, manifest: Mapping[str, Any], home: Path, *, orphans: bool = True) -> str | None:
    """Tell the study how a RUNNING trial ended, if its run has; returns the state told (or None).

    ``orphans``: also fail a RUNNING trial that has no run (its driver died between asking
    and creating the run); readers pass False, since a live driver may be creating it.
    """
    from optuna.trial import TrialState

    run_id = trial.user_attrs.get("run_id") or (manifest.get("trials", {}).get(str(trial.number)) or {}).get("run_id")
    if not run_id and not orphans:
        return None
    state, status = run_state(run_id, home)
    if state in ("queued", "running"):
        return None
    goal = objective(manifest["metric"])
    try:
        if state == "finished" and goal.final(status) is not None:
            study.tell(trial.number, goal.final(status))
            return "complete"
        if state == "pruned":
            study.tell(trial.number, state=TrialState.PRUNED)
            return "pruned"
        reason = status.get("error") or f"run ended {state}"
        study._storage.set_trial_user_attr(trial._trial_id, "error", str(reason)[:500])
        study.tell(trial.number, state=TrialState.FAIL)
        return "fail"
    except (ValueError, RuntimeError):  # told meanwhile (another driver, or tune show): nothing to do
        return None


def settle_all(study, manifest: Mapping[str, Any], home: Path, *, orphans: bool = True) -> dict[int, str]:
    """Settle every RUNNING trial whose run has ended; {number: state told}."""
    from optuna.trial import TrialState

    told = {}
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        outcome = settle(study, trial, manifest, home, orphans=orphans)
        if outcome:
            told[trial.number] = outcome
    return told


# ---------------------------------------------------------------- the loop


def drive(name: str, trials: int, *, parallel: int | None = None, home: Path | None = None,
          poll: float = POLL_SECONDS, on_event: Event | None = None) -> dict[str, int]:
    """Run ``trials`` more trials of study ``name``, ``parallel`` at a time, until all have ended.

    Trials still RUNNING from an earlier driver are waited for (and settled) too. Returns
    counts of the study's trials by state. KeyboardInterrupt stops asking; trials in flight
    keep running (``tune resume NAME --trials 0`` settles them later).
    """
    from optuna.trial import TrialState

    home = Path(home or lowrank_home()).resolve()
    say = on_event or (lambda text: None)
    manifest = studies.read_manifest(name, home)
    parallel = parallel or int(manifest.get("parallel") or 1)
    allow_parallel_cpu_runs(parallel)
    seed = manifest.get("seed")
    # a resumed study gets a fresh sampler seed: the same one would redraw the same first points
    study = studies.load_study(manifest, seed=None if seed is None else seed + len(manifest.get("trials", {})))
    distributions = {param.key: param.distribution() for param in space_from_dicts(manifest["space"])}
    asked = 0
    while True:
        for number, outcome in settle_all(study, manifest, home).items():
            say(_ended_line(study, number, outcome))
        inflight = len(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))
        while inflight < parallel and asked < trials:
            trial = study.ask(distributions)
            asked += 1
            try:
                run_id = start_trial(manifest, trial, home)
            except (BudgetError, ConfigError) as error:  # this draw cannot run: the trial fails, the study goes on
                study._storage.set_trial_user_attr(trial._trial_id, "error", error.detail[:500])
                study.tell(trial, state=TrialState.FAIL)
                studies.record_trial(name, trial.number, None, home, params=dict(trial.params), error=error.detail)
                say(f"trial {trial.number}: cannot run {_params(trial.params)}: {error.detail}")
                continue
            inflight += 1
            say(f"trial {trial.number}: run {run_id} queued  {_params(trial.params)}")
        if not inflight and asked >= trials:
            break
        time.sleep(poll)
    counts: dict[str, int] = {}
    for trial in study.get_trials(deepcopy=False):
        counts[trial.state.name.lower()] = counts.get(trial.state.name.lower(), 0) + 1
    return counts


def _frozen(study, number: int):
    return next((trial for trial in study.get_trials(deepcopy=False) if trial.number == number), None)


def _params(params: Mapping[str, Any]) -> str:
    return "  ".join(f"{key}={value:.4g}" if isinstance(value, float) else f"{key}={value}"
                     for key, value in params.items())


def _ended_line(study, number: int, outcome: str) -> str:
    trial = _frozen(study, number)
    value = trial.value if trial is not None else None
    what = {"complete": "finished", "pruned": "pruned", "fail": "failed"}[outcome]
    line = f"trial {number}: {what}" + (f" {value:.4g}" if value is not None else "")
    if trial is not None and outcome == "pruned" and trial.last_step is not None:
        line += f" at epoch {trial.last_step}"
    try:
        best = study.best_trial
        line += f"   (best: trial {best.number}, {best.value:.4g})"
    except ValueError:
        pass
    return line
