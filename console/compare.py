"""Budget-matched comparisons: one preset, several methods, several parameter budgets, seeds.

The research question is always "at the same parameter budget, which substitute gives the
lowest error?" (research notes 000: budgets set with a solver on a parameter count, then
error plotted against parameters and mult-adds). A *sweep* is:

1. a **plan** (:func:`plan_sweep`): one entry per (method, budget, seed), each with the
   method's hyperparameter solved on the meta device by the same code the worker uses
   (:func:`lowrank.build.build_network` -> :func:`lowrank.budget.solve_budget`), the
   achieved parameters and mult-adds and the gap; a budget a method cannot reach is a
   per-entry ``problem`` carrying the solver's message (with the reachable range).
   Methods without a hyperparameter (dense, separable) are references: one entry per
   seed, whatever the budgets.
2. **runs**: each entry's config is the preset + overrides with ``substitute.method``,
   the solved ``substitute.hp`` *pinned* (``substitute.budget`` cleared: hp and budget
   are exclusive) and ``train.seed``; so config.yaml says exactly what ran even if the
   solver changes later. The budget lives in the run's status (``sweep``,
   ``sweep_budget``, ``sweep_method``, ``sweep_seed``) and in the manifest.
3. a **manifest** ``$LOWRANK_HOME/sweeps/<sweep_id>.json`` (written atomically, updated
   under a lock): preset, overrides, methods, budgets, seeds and the entries with their
   run ids, plan figures and resolved configs (so a deleted run can be recreated).

Runs are queued through :mod:`console.scheduler`; results are read back from each run's
status.json (the worker also appends a results.csv row carrying the sweep id).
No torch at import time: the library is imported inside the functions that need it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import re
import secrets
import statistics
import time
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from lowrank.deploy.records import SUMMARY_KEYS as LATENCY_KEYS, device_key, pick_key
from lowrank.errors import BudgetError, ConfigError, UserError
from lowrank.run_files import number
from lowrank.rundir import (CHECKPOINT_FILE, RunDir, atomic_write_text, file_lock, lowrank_home,
                            now_iso, read_json, runs_root)

SWEEPS_DIR = "sweeps"
STATUS_KEYS = ("sweep", "sweep_method", "sweep_budget", "sweep_seed")  # what a sweep run carries in status.json
ERROR_METRICS = {"test_err1": "test top-1 error %", "best_val_err1": "best val top-1 error %",
                 "final_val_err1": "final val top-1 error %"}


# ---------------------------------------------------------------- the plan


@dataclasses.dataclass
class PlanEntry:
    """One planned run: a method at a budget (None for a reference) and a seed."""

    method: str
    budget: float | None
    seed: int
    name: str
    reference: bool = False  # a method without hp: trained once per seed, whatever the budgets
    hp: float | int | None = None
    hp_name: str | None = None
    params: int | None = None
    macs: int | None = None
    target: int | None = None  # the parameter count the budget asks for
    gap: float | None = None  # (params - target) / target
    problem: str | None = None  # why this entry cannot run (e.g. the budget is out of the method's reach)
    hint: str | None = None
    run_id: str | None = None
    grid: dict[str, str] = dataclasses.field(default_factory=dict)  # this entry's --grid values (KEY -> value)
    dense_params: int | None = None  # of this entry's grid point (a width grid changes the dense network)
    dense_macs: int | None = None
    history: list[str] = dataclasses.field(default_factory=list)  # earlier run ids of this entry (resume)
    config: dict[str, Any] | None = None  # the resolved config the run gets (hp pinned)

    def to_dict(self, with_config: bool = False) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        if not with_config:
            data.pop("config")
        return data


@dataclasses.dataclass
class SweepPlan:
    """Every (method, budget, seed) of a sweep with its solved hp, or why it cannot run."""

    preset: str
    overrides: list[str]
    methods: list[str]
    budgets: list[float]
    seeds: list[int]
    name: str
    model: str
    dataset: str
    input_shape: tuple[int, int, int]
    num_classes: int
    dense_params: int
    dense_macs: int
    entries: list[PlanEntry]
    notes: list[str] = dataclasses.field(default_factory=list)
    grid: dict[str, list[str]] = dataclasses.field(default_factory=dict)  # --grid KEY -> values (cartesian)

    @property
    def problems(self) -> list[PlanEntry]:
        """Entries that cannot run (one per unreachable (method, budget, seed))."""
        return [entry for entry in self.entries if entry.problem]

    @property
    def runnable(self) -> list[PlanEntry]:
        return [entry for entry in self.entries if not entry.problem]

    def to_dict(self, with_config: bool = False) -> dict[str, Any]:
        data = {key: getattr(self, key) for key in ("preset", "overrides", "methods", "budgets", "seeds", "name",
                                                     "model", "dataset", "num_classes", "dense_params",
                                                     "dense_macs", "notes", "grid")}
        data["input_shape"] = list(self.input_shape)
        data["entries"] = [entry.to_dict(with_config) for entry in self.entries]
        return data


def _seed_list(seeds: int | Sequence[int] | None, base: int) -> list[int]:
    """``N`` -> N consecutive seeds from the preset's ``train.seed``; a list is taken as is."""
    if seeds is None:
        return [base]
    if isinstance(seeds, int):
        if seeds < 1:
            raise UserError(f"--seeds must be >= 1, got {seeds}", key="--seeds")
        return [base + index for index in range(seeds)]
    out = list(dict.fromkeys(int(seed) for seed in seeds))
    if not out:
        raise UserError("no seeds given", key="--seeds")
    return out


def _check_methods(methods: Sequence[str]) -> list[str]:
    from lowrank.methods import get_method, list_methods

    names = list(dict.fromkeys(method.strip() for method in methods if method.strip()))
    if not names:
        raise UserError("no methods given", key="--methods", hint="e.g. --methods generic,tt,sep_hashed")
    known = [method.name for method in list_methods()]
    for name in names:
        try:
            get_method(name)
        except KeyError:
            raise UserError(f"unknown method {name!r}", key="--methods", hint=f"known methods: {', '.join(known)}") from None
    return names


def _check_budgets(budgets: Sequence[float]) -> list[float]:
    out = list(dict.fromkeys(float(budget) for budget in budgets))
    for budget in out:
        if not 0 < budget <= 1:
            raise UserError(f"budget {budget:g} is not a fraction in (0, 1] of the dense network's parameters",
                            key="--budgets", hint="e.g. --budgets 0.02,0.05,0.1")
    return sorted(out)


# keys a sweep sets itself: a --grid over them would fight the method x budget x seed axes
SWEEP_AXES = ("substitute.method", "substitute.budget", "substitute.budget_params", "substitute.hp",
              "train.seed", "name")


def _split_values(text: str) -> list[str]:
    """``0.1,0.2`` -> ``["0.1", "0.2"]``; commas inside ``[...]``/``{...}`` stay (``[60,120],[30,60]``)."""
    out, depth, current = [], 0, ""
    for char in text:
        if char in "[{":
            depth += 1
        elif char in "]}":
            depth -= 1
        if char == "," and depth == 0:
            out.append(current.strip())
            current = ""
        else:
            current += char
    out.append(current.strip())
    return out


def parse_grid(texts: Sequence[str]) -> dict[str, list[str]]:
    """``["train.weight_decay=1e-4,5e-4", ...]`` -> ``{"train.weight_decay": ["1e-4", "5e-4"], ...}``.

    Each value is YAML-typed later, exactly as ``--set KEY=VALUE`` is; the config check of
    every grid point names the key and value that is wrong.
    """
    grid: dict[str, list[str]] = {}
    for text in texts:
        key, sep, values = text.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UserError(f"expected KEY=V1,V2,..., got {text!r}", key="--grid",
                            hint="e.g. --grid train.weight_decay=1e-4,5e-4")
        if key in SWEEP_AXES:
            raise UserError(f"{key} is one of the sweep's own axes", key="--grid",
                            hint="methods, budgets and seeds have --methods, --budgets and --seeds")
        if key in grid:
            raise UserError(f"{key} is given twice", key="--grid", hint="give each key once with all its values")
        parts = _split_values(values)
        if any(not part for part in parts):
            raise UserError(f"empty value in {text!r}", key="--grid", hint="e.g. --grid model.kwargs.width=8,16")
        grid[key] = list(dict.fromkeys(parts))
    return grid


def grid_points(grid: Mapping[str, Sequence[str]]) -> list[dict[str, str]]:
    """Every combination of the grid's values (one empty point without a grid), in order."""
    import itertools

    keys = list(grid)
    return [dict(zip(keys, values)) for values in itertools.product(*(grid[key] for key in keys))]


def grid_label(point: Mapping[str, Any] | None) -> str:
    """``{"train.weight_decay": "5e-4"}`` -> ``weight_decay=5e-4`` (full keys when leaves clash)."""
    point = dict(point or {})
    leaves = [key.rsplit(".", 1)[-1] for key in point]
    return " ".join(f"{key.rsplit('.', 1)[-1] if leaves.count(key.rsplit('.', 1)[-1]) == 1 else key}={value}"
                    for key, value in point.items())


def _load_for(preset: Path, overrides: list[str], method: str, budget: float | None, notes: list[str]):
    """The preset with ``method`` at ``budget`` (hp/budget_params cleared), validated.

    Preset options that the method does not take (e.g. ``dims`` of tt for generic) are
    dropped with a note rather than refusing the whole sweep.
    """
    from lowrank.config import load

    target = [f"substitute.method={method}", "substitute.hp=null", "substitute.budget_params=null",
              f"substitute.budget={'null' if budget is None else repr(budget)}"]
    try:
        return load(preset, [*overrides, *target])
    except ConfigError as error:
        if not (error.key or "").startswith("substitute.options."):
            raise
    note = f"{method}: the preset's substitute.options do not apply to it; using {method}'s defaults"
    if note not in notes:
        notes.append(note)
    return load(preset, [*overrides, *target, "substitute.options={}"])


MAX_SWEEP_RUNS = 10_000  # a sweep larger than this is a typo (--seeds 100000000), not an experiment


def _check_size(grid: Mapping[str, Sequence[str]], names: Sequence[str], with_hp: Sequence[str],
                budgets: Sequence[float], seeds: int | Sequence[int] | None) -> None:
    """Refuse a sweep of more than MAX_SWEEP_RUNS runs before expanding anything."""
    import math

    per_seed = math.prod(len(values) for values in grid.values()) * \
        (len(with_hp) * len(budgets) + len(names) - len(with_hp))
    count = per_seed * (seeds if isinstance(seeds, int) else len(list(seeds or [None])))
    if count > MAX_SWEEP_RUNS:
        raise UserError(f"this sweep would be {count:,} runs (grid points x methods x budgets x seeds); "
                        f"at most {MAX_SWEEP_RUNS:,}", key="--seeds" if per_seed <= MAX_SWEEP_RUNS else "--grid",
                        hint="check --seeds and the --grid values, or split the study into several sweeps")


def plan_sweep(preset: str | Path, methods: Sequence[str], budgets: Sequence[float],
               seeds: int | Sequence[int] | None = 1, overrides: Sequence[str] = (),
               grid: Mapping[str, Sequence[str]] | None = None) -> SweepPlan:
    """Expand a sweep into entries, solving each (grid point, method, budget) on the meta device.

    ``grid``: extra keys to sweep (``--grid KEY=V1,V2``), cartesian with methods x budgets x
    seeds; each grid point's budgets are fractions of *its* dense network, so a width or
    weight-decay study stays budget-matched.

    ``seeds``: a count (consecutive from the preset's ``train.seed``) or explicit seeds.
    A bad preset or override raises ConfigError; an unreachable budget does not raise --
    its entries carry ``problem`` (the solver's message with the reachable range).
    """
    import torch

    from lowrank.build import build_network
    from lowrank.config import load
    from lowrank.data import dataset_shape
    from lowrank.methods import get_method

    preset, overrides = Path(preset), list(overrides)
    names = _check_methods(methods)
    with_hp = [name for name in names if get_method(name).hp is not None]
    budget_list = _check_budgets(budgets)
    if with_hp and not budget_list:
        raise UserError(f"{', '.join(with_hp)} need(s) budgets", key="--budgets", hint="e.g. --budgets 0.05,0.1")
    grid = {key: list(values) for key, values in (grid or {}).items()}
    _check_size(grid, names, with_hp, budget_list, seeds)
    points = grid_points(grid)
    from lowrank.extras import check_config

    for point in points:  # every grid point must be a valid config: the error names the key and value
        check_config(load(preset, [*overrides, *(f"{key}={value}" for key, value in point.items())]))
    base = load(preset, overrides)  # the preset itself must be valid: errors name its file and key
    seed_list = _seed_list(seeds, base.train.seed)
    num_classes, input_shape = dataset_shape(base.data)
    notes: list[str] = []
    references = [name for name in names if name not in with_hp]
    if references:
        notes.append(f"{', '.join(references)}: no hyperparameter, so one reference run per seed "
                     f"(independent of the budgets)")

    entries: list[PlanEntry] = []
    dense_params = dense_macs = None
    for point, method in ((point, method) for point in points for method in names):
        declaration = get_method(method)
        point_overrides = [*overrides, *(f"{key}={value}" for key, value in point.items())]
        for budget in (budget_list if declaration.hp is not None else [None]):
            label = (f"{base.name}-{method}" + (f"-{budget:g}" if budget is not None else "")
                     + (f"-{grid_label(point).replace(' ', '-')}" if point else ""))
            config = _load_for(preset, point_overrides, method, budget, notes)
            solved: dict[str, Any] = {}
            problem = hint = None
            try:
                with torch.device("meta"):
                    net = build_network(config, num_classes, input_shape, device="meta")
            except BudgetError as error:
                problem, hint = error.detail, error.hint
            else:
                if dense_params is None:  # the header's dense network: the first grid point's
                    dense_params, dense_macs = net.dense_params, net.dense_macs
                solved = {"hp": net.hp, "params": net.params, "macs": net.macs, "target": net.budget_target,
                          "gap": net.budget_gap, "dense_params": net.dense_params, "dense_macs": net.dense_macs}
            for seed in seed_list:
                entry = PlanEntry(method=method, budget=budget, seed=seed, name=f"{label}-s{seed}",
                                  reference=declaration.hp is None, grid=dict(point),
                                  hp_name=declaration.hp.name if declaration.hp else None,
                                  problem=problem, hint=hint, **solved)
                if not problem:
                    entry.config = _pinned_config(config, entry)
                entries.append(entry)
    if dense_params is None:  # every entry unreachable: count the dense network for the header
        with torch.device("meta"):
            dense = build_network(load(preset, [*overrides, "substitute.method=dense", "substitute.hp=null",
                                                "substitute.budget=null", "substitute.budget_params=null",
                                                "substitute.options={}"]), num_classes, input_shape, device="meta")
        dense_params, dense_macs = dense.dense_params, dense.dense_macs
    return SweepPlan(preset=str(preset), overrides=overrides, methods=names, budgets=budget_list, seeds=seed_list,
                     name=base.name, model=base.model.name, dataset=base.data.name, input_shape=tuple(input_shape),
                     num_classes=num_classes, dense_params=dense_params, dense_macs=dense_macs, entries=entries,
                     notes=notes, grid=grid)


def _pinned_config(config, entry: PlanEntry) -> dict[str, Any]:
    """The run's resolved config: solved hp pinned, budget cleared, seed and name set."""
    from lowrank.config import from_dict

    data = config.to_dict()
    data["name"] = entry.name
    data["substitute"].update(hp=entry.hp, budget=None, budget_params=None)
    data["train"]["seed"] = entry.seed
    if data["bench"]["after_run"] is None:  # a comparison measures each run's latency unless told not to
        data["bench"]["after_run"] = True
    return from_dict(data, source=f"sweep entry {entry.name}").to_dict()  # validated again, hp range included


# ---------------------------------------------------------------- sweep ids and manifests


def new_sweep_id() -> str:
    """``sweep-YYYYmmdd-HHMMSS-<4 hex>``: sortable by creation time, unique."""
    return f"sweep-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"


def sweeps_root(home: Path | None = None) -> Path:
    return Path(home or lowrank_home()) / SWEEPS_DIR


def manifest_path(sweep_id: str, home: Path | None = None) -> Path:
    return sweeps_root(home) / f"{sweep_id}.json"


def write_manifest(manifest: Mapping[str, Any], home: Path | None = None) -> Path:
    """Write the sweep's manifest atomically (readers see the old or the new file)."""
    path = manifest_path(manifest["sweep"], home)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(manifest, indent=2, default=str))
    return path


@contextlib.contextmanager
def _manifest_lock(sweep_id: str, home: Path | None = None):
    with file_lock(sweeps_root(home) / f".{sweep_id}.lock"):
        yield


def read_manifest(sweep_id: str, home: Path | None = None) -> dict[str, Any]:
    """The manifest of ``sweep_id`` (exact id), checked (:func:`checked_manifest`); UserError if there is none."""
    data = read_json(manifest_path(sweep_id, home))
    if not data:
        raise UserError(f"no sweep {sweep_id!r} in {sweeps_root(home)}", hint="lowrank compare ls")
    return checked_manifest(data)


_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")  # a directory name under runs/: no '/', no '..'


def _finite_or_none(value: Any) -> Any:
    return value if number(value) is not None else None


def checked_manifest(data: Mapping[str, Any]) -> dict[str, Any]:
    """A sweep manifest with every field the readers compute with of the type they expect.

    A manifest is a file anyone can edit: entries that are not objects are dropped, a
    run id that is not a plain directory name (``5``, ``../../x``) is no run (the entry
    shows as skipped, never a path outside runs/), and a method, budget, seed, grid or
    figure of the wrong type becomes text or None - so compare show/ls/resume and the
    console show the sweep instead of crashing on it.
    """
    manifest = dict(data)
    entries = []
    for entry in manifest.get("entries") if isinstance(manifest.get("entries"), list) else []:
        if not isinstance(entry, dict):
            continue
        entry = dict(entry)
        run_id = entry.get("run_id")
        if run_id is not None and not (isinstance(run_id, str) and _RUN_ID.match(run_id) and ".." not in run_id):
            entry["run_id"] = None
            entry["problem"] = f"unreadable manifest entry: run_id {str(run_id)[:60]!r} is not a run id"
        entry["method"] = entry["method"] if isinstance(entry.get("method"), str) else str(entry.get("method"))
        for key in ("budget", "hp", "params", "macs", "dense_params", "dense_macs"):
            entry[key] = _finite_or_none(entry.get(key))
        seed = entry.get("seed")
        entry["seed"] = seed if isinstance(seed, int) and not isinstance(seed, bool) else None
        grid = entry.get("grid")
        entry["grid"] = {str(k): str(v) for k, v in grid.items()} if isinstance(grid, dict) else {}
        entries.append(entry)
    manifest["entries"] = entries
    for key in ("methods", "budgets", "seeds"):
        if not isinstance(manifest.get(key), list):
            manifest[key] = None
    manifest["budgets"] = [b for b in manifest["budgets"] or [] if number(b) is not None] or None
    manifest["methods"] = [str(m) for m in manifest["methods"] or [] if isinstance(m, (str, int, float))] or None
    for key in ("dense_params", "dense_macs"):
        manifest[key] = _finite_or_none(manifest.get(key))
    if not isinstance(manifest.get("requirement"), (dict, type(None))):
        manifest["requirement"] = None
    return manifest


def sweep_ids(home: Path | None = None) -> list[str]:
    """Every sweep id under ``home``, oldest first."""
    root = sweeps_root(home)
    return sorted(path.stem for path in root.glob("sweep-*.json")) if root.is_dir() else []


def resolve_sweep(text: str, home: Path | None = None) -> str:
    """The sweep id ``text`` names: the id, a unique prefix or unique substring, or ``last``."""
    ids = sweep_ids(home)
    text = text.strip()
    if text in ids:
        return text
    if text in ("last", "latest") and ids:
        return ids[-1]
    matches = [sid for sid in ids if sid.startswith(text)] or [sid for sid in ids if text in sid]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise UserError(f"no sweep matches {text!r} in {sweeps_root(home)}",
                        hint=f"recent sweeps: {', '.join(ids[-5:]) or 'none yet'}")
    raise UserError(f"{text!r} matches {len(matches)} sweeps: {', '.join(matches[:10])}", hint="give a longer id")


# ---------------------------------------------------------------- launch


def launch_sweep(plan: SweepPlan, requirement: Mapping[str, Any] | None = None, *, skip_unreachable: bool = False,
                 home: Path | None = None, sweep_id: str | None = None) -> dict[str, Any]:
    """Create one run per runnable entry, write the manifest, queue every run; returns the manifest.

    Unreachable entries refuse the whole sweep (UserError listing each, nothing created)
    unless ``skip_unreachable``. ``requirement``: overrides of each config's ``resources``
    (as :func:`console.scheduler.requirement_from_cli` returns).
    """
    from console.scheduler import resolve_requirement, submit_many

    home = Path(home or lowrank_home()).resolve()
    if plan.problems and not skip_unreachable:
        raise UserError(unreachable_message(plan),
                        hint="choose budgets inside the ranges, drop those methods, or pass --skip-unreachable "
                             "to launch the rest")
    runnable = plan.runnable
    if not runnable:
        raise UserError("no entry of the sweep can run", hint=unreachable_message(plan))
    needs = [resolve_requirement(entry.config, requirement) for entry in runnable]  # bad flags: nothing created
    sweep_id = sweep_id or new_sweep_id()
    runs = []
    for entry, need in zip(runnable, needs):
        run = RunDir.create(entry.config, home=home, extra_status={
            "preset": plan.preset, **_status_tags(sweep_id, entry.method, entry.budget, entry.seed),
            **({"sweep_grid": entry.grid} if entry.grid else {}),
            "requirement": need.to_dict()})  # recorded now: a running scheduler may pick it up before submit
        entry.run_id = run.run_id
        runs.append((run, need))
    manifest = {"sweep": sweep_id, "created": now_iso(), **plan.to_dict(with_config=True),
                "preset_path": str(Path(plan.preset).resolve()), "requirement": dict(requirement or {}),
                "skipped": len(plan.problems)}
    with _manifest_lock(sweep_id, home):
        write_manifest(manifest, home)
    submit_many(runs)  # local: this home's queue; slurm: one job array for the whole sweep
    return manifest


def _status_tags(sweep_id: str, method: str, budget: float | None, seed: int) -> dict[str, Any]:
    return {"sweep": sweep_id, "sweep_method": method, "sweep_budget": budget, "sweep_seed": seed}


def unreachable_message(plan: SweepPlan) -> str:
    """One line per unreachable (method, budget), seeds folded."""
    seen: dict[tuple[str, float | None, str], str] = {}
    for entry in plan.problems:
        seen.setdefault((entry.method, entry.budget, grid_label(entry.grid)), entry.problem or "")
    lines = [f"{len(seen)} (method, budget) pair(s) cannot be planned:"]
    lines += [(f"  {method} @ {budget:g}" if budget is not None else f"  {method}") + (f" ({grid})" if grid else "")
              + f": {problem}" for (method, budget, grid), problem in seen.items()]
    return "\n".join(lines)


# ---------------------------------------------------------------- progress and results


def entry_statuses(manifest: Mapping[str, Any], home: Path | None = None, *,
                   check: bool = True) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(entry, status) for every entry; ``check`` marks runs whose worker vanished as failed."""
    from console.runs import reconcile

    root = runs_root(home)
    out = []
    for entry in manifest.get("entries", []):
        status: dict[str, Any] = {}
        if entry.get("run_id"):
            run = RunDir(root / entry["run_id"])
            status = run.read_status()
            if status and check:
                status = reconcile(run, status)
            if not status:
                status = {"state": "vanished", "error": f"run directory {run.path} is missing"}
        else:
            status = {"state": "skipped", "error": entry.get("problem")}
        out.append((dict(entry), status))
    return out


def progress(manifest: Mapping[str, Any], home: Path | None = None) -> list[dict[str, Any]]:
    """One row per entry for a live view: run, method, budget, seed, state, epoch, errors."""
    rows = []
    for entry, status in entry_statuses(manifest, home):
        rows.append({"run_id": entry.get("run_id"), "method": entry["method"], "budget": entry.get("budget"),
                     "grid": grid_label(entry.get("grid")), "seed": entry.get("seed"),
                     "state": status.get("state"), "epoch": status.get("epoch"),
                     "epochs": status.get("epochs"), "last_val_err1": status.get("last_val_err1"),
                     "best_val_err1": status.get("best_val_err1"), "error": status.get("error")})
    return rows


def is_done(rows: Iterable[Mapping[str, Any]]) -> bool:
    """True when no run of the sweep is queued or running."""
    return all(row.get("state") not in ("queued", "running") for row in rows)


def run_rows(manifest: Mapping[str, Any], home: Path | None = None) -> list[dict[str, Any]]:
    """One row per entry with the plan figures and the run's outcome (from its status.json)."""
    rows = []
    for entry, status in entry_statuses(manifest, home):
        finished = status.get("state") == "finished"
        rows.append({
            "sweep": manifest["sweep"], "run_id": entry.get("run_id"), "method": entry["method"],
            "budget": entry.get("budget"), "grid": grid_label(entry.get("grid")), "seed": entry.get("seed"),
            "reference": bool(entry.get("reference")),
            "hp": status.get("hp", entry.get("hp")) if finished else entry.get("hp"),
            "params": status.get("params") or entry.get("params"), "macs": status.get("macs") or entry.get("macs"),
            "dense_params": entry.get("dense_params") or manifest.get("dense_params"),
            "dense_macs": entry.get("dense_macs") or manifest.get("dense_macs"),
            "state": status.get("state"), "epoch": status.get("epoch"), "epochs": status.get("epochs"),
            **{key: status.get(key) if finished else None
               for key in ("final_val_err1", "best_val_err1", "test_err1", "test_err5", "train_seconds")},
            # the measured speed (bench.after_run), only ever compared with its own device key
            **{key: status.get(key) if finished else None for key in LATENCY_KEYS},
            "latency_key": device_key(status) if finished else None,
            "error": status.get("error") if not finished else None,
        })
    return rows


def _mean_std(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


# a group's latency figures on one device key, flat in a summary row (None where it has none there)
LATENCY_COLUMNS = ("latency_key", "latency_ms_b1_mean", "latency_ms_b1_std", "throughput_mean", "throughput_std",
                   "throughput_batch")


def _latency_figures(members: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Mean and std of the batch-1 latency and the throughput of runs measured on one device key."""
    figures: dict[str, Any] = {"runs": len(members)}
    for key in ("latency_ms_b1", "throughput"):
        values = [value for value in (number(row.get(key)) for row in members) if value is not None]
        figures[f"{key}_mean"], figures[f"{key}_std"] = _mean_std(values)
    batches = sorted({row["throughput_batch"] for row in members if isinstance(row.get("throughput_batch"), int)})
    figures["throughput_batch"] = batches[0] if len(batches) == 1 else (batches or None)
    figures["torch"] = sorted({str(row["latency_torch"]) for row in members if row.get("latency_torch")})
    return figures


def with_device(row: Mapping[str, Any], key: str | None) -> dict[str, Any]:
    """A summary row with the latency figures of device ``key`` in :data:`LATENCY_COLUMNS`."""
    figures = (row.get("latency") or {}).get(key) if key else None
    out = dict(row)
    out.update({column: None for column in LATENCY_COLUMNS})
    if figures:
        out["latency_key"] = key
        out.update({column: figures.get(column) for column in LATENCY_COLUMNS[1:]})
    return out


def summary_devices(summary: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """Device key -> how many finished runs of the summary's groups were measured on it."""
    counts: dict[str, int] = {}
    for row in summary:
        for key, figures in (row.get("latency") or {}).items():
            counts[key] = counts.get(key, 0) + int(figures.get("runs") or 0)
    return counts


def summarize(rows: Sequence[Mapping[str, Any]], methods: Sequence[str] | None = None,
              device: str | None = None) -> list[dict[str, Any]]:
    """Per (method, grid point, budget): plan figures, runs finished / total, mean and sample std
    over seeds -- grouped by every swept key.

    Only finished runs enter the means; std is None with fewer than two. Rows are ordered
    by ``methods`` (the sweep's order), then the grid point (first seen first), then budget.
    Measured latency and throughput are averaged per device key, never across them: ``latency``
    maps each key to its figures (:func:`_latency_figures`), and the flat
    :data:`LATENCY_COLUMNS` carry those of ``device`` (None: left empty).
    """
    groups: dict[tuple[str, float | None, str], list[Mapping[str, Any]]] = {}
    points: dict[str, int] = {}
    for row in rows:
        groups.setdefault((row["method"], row.get("budget"), row.get("grid") or ""), []).append(row)
        points.setdefault(row.get("grid") or "", len(points))
    order = {name: index for index, name in enumerate(methods or [])}
    out = []
    for (method, budget, grid), members in sorted(groups.items(), key=lambda item: (
            order.get(item[0][0], len(order)), item[0][0], points[item[0][2]],
            -1 if item[0][1] is None else item[0][1])):
        done = [row for row in members if row.get("state") == "finished"]
        first = members[0]
        summary: dict[str, Any] = {
            "method": method, "budget": budget, "grid": grid, "reference": bool(first.get("reference")),
            "hp": first.get("hp"),
            "params": first.get("params"), "macs": first.get("macs"),
            "params_fraction": (first["params"] / first["dense_params"]
                                if first.get("params") and first.get("dense_params") else None),
            "runs": len(members), "finished": len(done),
            "states": dict(sorted(_count(row.get("state") for row in members).items())),
            "seeds": [row.get("seed") for row in done],
        }
        for key in ("final_val_err1", "best_val_err1", "test_err1", "train_seconds"):
            mean, std = _mean_std([float(row[key]) for row in done if row.get(key) is not None])
            summary[f"{key}_mean"], summary[f"{key}_std"] = mean, std
        measured: dict[str, list[Mapping[str, Any]]] = {}
        for row in done:
            key = device_key(row)
            if key is not None:
                measured.setdefault(key, []).append(row)
        summary["latency"] = {key: _latency_figures(runs) for key, runs in measured.items()}
        out.append(with_device(summary, device))
    return out


def _count(values: Iterable[Any]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for value in values:
        counts[str(value)] = counts.get(str(value), 0) + 1
    return counts


# ---------------------------------------------------------------- resume and listing


def resume_sweep(sweep_id: str, requirement: Mapping[str, Any] | None = None,
                 home: Path | None = None) -> list[dict[str, Any]]:
    """Relaunch the entries whose run did not finish (failed, killed, vanished); returns the actions.

    A run with a checkpoint is resumed in place (:func:`console.runs.relaunch` with
    ``resume=True``); one without gets a fresh run from the same config; a run whose
    directory is gone is recreated from the manifest. Each goes back through the
    scheduler. Finished, queued and running entries are left alone; the manifest
    records the new run ids (the old ones under ``history``).
    """
    from console.runs import relaunch
    from console.scheduler import ensure_scheduler, requirement_for, resolve_requirement, submit_many

    home = Path(home or lowrank_home()).resolve()
    actions: list[dict[str, Any]] = []
    queued: dict[bool, list] = {}  # resume? -> (run, requirement): submitted together (Slurm: one array each)
    with _manifest_lock(sweep_id, home):
        manifest = read_manifest(sweep_id, home)
        for (entry, status), stored in zip(entry_statuses(manifest, home), manifest["entries"]):
            state, old = status.get("state"), entry.get("run_id")
            action = {"method": entry["method"], "budget": entry.get("budget"), "seed": entry.get("seed"),
                      "run_id": old, "state": state, "action": "kept"}
            if state in ("finished", "queued", "running", "skipped", "pruned"):
                actions.append(action)
                continue
            tags = _status_tags(sweep_id, entry["method"], entry.get("budget"), entry.get("seed"))
            if state == "vanished":
                run, resume = None, False
                config = stored.get("config")
                if not config:
                    action["action"] = "cannot recreate: no config in the manifest"
                    actions.append(action)
                    continue
                target = RunDir.create(config, home=home, extra_status={"preset": manifest.get("preset"), **tags})
            else:
                run = RunDir(runs_root(home) / old)
                resume = run.file(CHECKPOINT_FILE).exists()
                target = relaunch(run, resume=resume)
                target.update_status(**tags)
            if requirement or run is None:  # new flags, or a recreated run: flags of the launch
                need = resolve_requirement(target.read_config(), requirement or manifest.get("requirement"))
            else:
                need = requirement_for(target)  # as recorded when it was first queued
            queued.setdefault(resume, []).append((target, need))
            if target.run_id != old:
                stored["history"] = [*stored.get("history", []), *([old] if old else [])]
                stored["run_id"] = target.run_id
            action.update(action="resumed" if resume else "relaunched", run_id=target.run_id, previous=old)
            actions.append(action)
        manifest.setdefault("resumed", []).append(now_iso())
        write_manifest(manifest, home)
    for resume, runs in queued.items():
        submit_many(runs, resume=resume)
    if any(action["state"] == "queued" for action in actions):
        ensure_scheduler(home)  # queued runs from a scheduler that died still get started
    return actions


def list_sweeps(home: Path | None = None) -> list[dict[str, Any]]:
    """One summary per sweep: id, created, preset, methods, budgets, seeds, run states."""
    out = []
    for sweep_id in sweep_ids(home):
        manifest = read_json(manifest_path(sweep_id, home))
        if not manifest:
            out.append({"sweep": sweep_id, "created": None, "preset": None, "model": None, "dataset": None,
                        "methods": None, "budgets": None, "seeds": None, "runs": 0,
                        "states": {"unreadable": 1}})  # shown, never hidden
            continue
        manifest = checked_manifest(manifest)
        states = _count(status.get("state") for _, status in entry_statuses(manifest, home, check=False))
        out.append({"sweep": sweep_id, "created": manifest.get("created"), "preset": manifest.get("preset"),
                    "model": manifest.get("model"), "dataset": manifest.get("dataset"),
                    "methods": manifest.get("methods"), "budgets": manifest.get("budgets"),
                    "seeds": manifest.get("seeds"), "runs": len(manifest.get("entries", [])),
                    "states": dict(sorted(states.items()))})
    return out


# ---------------------------------------------------------------- plots


@dataclasses.dataclass(frozen=True)
class Axis:
    """An x axis of the error-vs-cost plots (``compare show --x``, the console's compare view)."""

    name: str  # as given to --x
    key: str  # the summary row's column (a group's value)
    run_key: str  # the run's status.json key (the console plots runs)
    label: str
    lower_is_better: bool = True  # the Pareto front keeps the lowest error for the cost; throughput: the most
    measured: bool = False  # a measurement of one device key: plotted for one key only, never mixed
    std_key: str | None = None  # the summary's std of ``key`` over seeds (error bars)


X_AXES: dict[str, Axis] = {axis.name: axis for axis in (
    Axis("params", "params", "params", "parameters"),
    Axis("macs", "macs", "macs", "mult-adds"),
    Axis("latency", "latency_ms_b1_mean", "latency_ms_b1", "latency ms (batch 1)", measured=True,
         std_key="latency_ms_b1_std"),
    Axis("throughput", "throughput_mean", "throughput", "throughput img/s", lower_is_better=False, measured=True,
         std_key="throughput_std"),
)}
DEFAULT_X = ("params", "macs")
NO_LATENCY_HINT = ("sweeps record it with bench.after_run (on for lowrank compare; --set bench.after_run=true "
                   "elsewhere); lowrank bench model RUN times one run")


def parse_axes(x: str | Sequence[str] | None) -> tuple[Axis, ...]:
    """``"params,latency"`` (or a list of names) -> the axes, in order; an unknown name is one UserError."""
    names = DEFAULT_X if x is None else (x.split(",") if isinstance(x, str) else list(x))
    names = list(dict.fromkeys(name.strip().lower() for name in names if name.strip()))
    known = ", ".join(X_AXES)
    if not names:
        raise UserError("no x axis given", key="--x", hint=f"a comma-separated list of {known}")
    for name in names:
        if name not in X_AXES:
            raise UserError(f"unknown x axis {name!r}", key="--x",
                            hint=f"a comma-separated list of {known}, e.g. --x params,latency")
    return tuple(X_AXES[name] for name in names)


def plot_device(summary: Sequence[Mapping[str, Any]], x: str | Sequence[str] | None = None,
                wanted: str | None = None) -> str | None:
    """The one device key whose latencies the measured axes of ``x`` plot (None when none is measured).

    :func:`lowrank.deploy.records.pick_key` decides on the runs counted per key; latencies of
    several keys are refused (never mixed on one axis) unless ``wanted`` picks one.
    """
    if not any(axis.measured for axis in parse_axes(x)):
        return None
    counts = summary_devices(summary)
    key, reason = pick_key(counts, wanted)
    if key is not None:
        return key
    if not counts:
        raise UserError("no finished run of this sweep has a measured latency to plot", key="--x",
                        hint=NO_LATENCY_HINT)
    if wanted:
        raise UserError(reason or "no such device", key="--latency-on", hint="give a part of one of those device keys")
    raise UserError(reason or "several devices", key="--x",
                    hint="plot one of them with --latency-on TEXT (a part of its key, e.g. 'x2 threads', 'H100')")


def shown_device(summary: Sequence[Mapping[str, Any]], wanted: str | None = None) -> tuple[str | None, str | None]:
    """(the device key a table shows the latencies of, a note on the keys it leaves out or None).

    ``wanted`` must pick one key (a UserError otherwise); without it a single key is shown, and of
    several the one with the most runs, the note naming the others and ``--latency-on``.
    """
    counts = summary_devices(summary)
    if wanted:
        key, reason = pick_key(counts, wanted)
        if key is None:
            raise UserError(reason or "no such device", key="--latency-on",
                            hint=NO_LATENCY_HINT if not counts else "give a part of one of those device keys")
        return key, None
    if len(counts) <= 1:
        return next(iter(counts), None), None
    key = max(counts, key=lambda name: (counts[name], name))
    others = "; ".join(f"{name} ({count} runs)" for name, count in counts.items() if name != key)
    return key, (f"also measured on {others}, not shown: latencies of different devices are never averaged "
                 f"together; --latency-on TEXT picks the device")


def pareto_front(points: Iterable[tuple[float, float]], higher_is_better: bool = False) -> list[tuple[float, float]]:
    """The points no other point beats on both cost (x) and error (y), by increasing x: each one
    has a lower error than every cheaper point -- or, with ``higher_is_better`` (throughput), than
    every point with a higher x."""
    ordered = sorted(points, key=(lambda point: (-point[0], point[1])) if higher_is_better else None)
    front: list[tuple[float, float]] = []
    for x, y in ordered:
        if not front or y < front[-1][1]:
            front.append((x, y))
    return sorted(front)


def _series(summary: Sequence[Mapping[str, Any]], x_key: str, metric: str, x_std_key: str | None = None
            ) -> dict[str, tuple[list[float], list[float], list[float], list[float]]]:
    """method -> (xs, mean errors, stds, x stds) against ``x_key``, sorted by x (groups with a result only)."""
    series: dict[str, list[tuple[float, float, float, float]]] = {}
    for row in summary:
        x, y = number(row.get(x_key)), number(row.get(f"{metric}_mean"))
        if x is None or y is None or x <= 0:
            continue
        series.setdefault(f"{row['method']} {row.get('grid') or ''}".strip(), []).append(
            (x, y, number(row.get(f"{metric}_std")) or 0.0, (number(row.get(x_std_key)) or 0.0) if x_std_key else 0.0))
    return {method: tuple(list(column) for column in zip(*sorted(points))) for method, points in series.items()}


def _axis_rows(summary: Sequence[Mapping[str, Any]], axis: Axis, device: str | None) -> list[dict[str, Any]]:
    """The rows an axis plots: a measured axis reads the figures of ``device`` only."""
    return [with_device(row, device) if axis.measured else dict(row) for row in summary]


def plot_series(summary: Sequence[Mapping[str, Any]], axis: str | Axis, *, metric: str = "test_err1",
                device: str | None = None) -> dict[str, tuple[list[float], list[float], list[float], list[float]]]:
    """What the plot against ``axis`` draws: series -> (xs, mean errors, their stds, x stds), from the
    finished runs' means; a measured axis reads the figures of ``device`` only (None: nothing)."""
    axis = X_AXES[axis] if isinstance(axis, str) else axis
    return _series(_axis_rows(summary, axis, device), axis.key, metric, axis.std_key)


def front_of(series: Mapping[str, tuple], axis: str | Axis) -> list[tuple[float, float]]:
    """The Pareto front of every plotted group (finished runs' means) for ``axis``'s direction."""
    axis = X_AXES[axis] if isinstance(axis, str) else axis
    return pareto_front(((x, y) for xs, ys, *_ in series.values() for x, y in zip(xs, ys)),
                        higher_is_better=not axis.lower_is_better)


def axis_label(axis: Axis, device: str | None, summary: Sequence[Mapping[str, Any]] = (), *,
               name_device: bool = True) -> str:
    """``latency ms (batch 1) on cpu: X x2 threads``, ``throughput img/s at batch 64 ... (higher is better)``
    (``name_device=False``: without the ``on ...``)."""
    label = axis.label
    if axis.name == "throughput":
        batches = {row.get("throughput_batch") for row in _axis_rows(summary, axis, device)} - {None}
        if len(batches) == 1 and isinstance(next(iter(batches)), int):
            label += f" at batch {next(iter(batches))}"
    if axis.measured and device and name_device:
        label += f" on {device}"
    return label + ("" if axis.lower_is_better else " (higher is better)")


def _si(value: float) -> str:
    """1234 -> 1.23k, 2.5e6 -> 2.5M (axis labels)."""
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.3g}{suffix}"
    return f"{value:.3g}"


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_MARKERS = ("o", "x", "+", "*", "#", "@", "%", "=")


def render_plots(summary: Sequence[Mapping[str, Any]], *, metric: str = "test_err1",
                 x: str | Sequence[str] | None = None, device: str | None = None, width: int | None = None,
                 height: int | None = None, color: bool = True) -> str:
    """Error against each axis of ``x`` (default parameters and mult-adds; log x), one series per
    method, and the Pareto front of the groups plotted (plotext). A measured axis (latency,
    throughput) plots one device key (:func:`plot_device`; mixing is refused)."""
    import plotext as plt

    from console.safe_text import clean

    axes = parse_axes(x)
    key = plot_device(summary, x, device)
    charts = []
    for axis in axes:
        series = plot_series(summary, axis, metric=metric, device=key)
        if not series:
            continue
        plt.clear_figure()
        if not color:
            plt.theme("clear")
        front = front_of(series, axis)
        if len(front) > 1:
            plt.plot([fx for fx, _ in front], [fy for _, fy in front], label="Pareto front",
                     marker="braille" if color else ".", **({"color": "gray"} if color else {}))
        for index, (method, (xs, ys, *_)) in enumerate(series.items()):
            # without colour the series differ by their marker character
            marker = "hd" if color else _MARKERS[index % len(_MARKERS)]
            if len(xs) > 1:
                plt.plot(xs, ys, label=clean(method), marker=marker)
            else:
                plt.scatter(xs, ys, label=clean(method), marker="x" if color else marker)
        plt.xscale("log")
        ticks = sorted({tick for xs, *_ in series.values() for tick in xs})
        if ticks:
            plt.xticks(ticks, [_si(tick) for tick in ticks])
        plt.title(clean(f"{ERROR_METRICS.get(metric, metric)} vs {axis.label} (log scale)"))
        # the device goes on a line of its own: plotext drops a title or label too long for the plot
        plt.xlabel(clean(axis_label(axis, key, summary, name_device=False)))
        plt.plotsize(width or min(plt.terminal_width() or 100, 110), height or 18)
        charts.append((f"{axis.label} measured on {clean(key)}\n" if axis.measured else "") + plt.build())
    plt.clear_figure()
    text = "\n".join(charts)
    return text if color else _ANSI.sub("", text)


def save_png(summary: Sequence[Mapping[str, Any]], path: str | Path, *, metric: str = "test_err1",
             title: str = "", x: str | Sequence[str] | None = None, device: str | None = None) -> Path:
    """The plots of ``x`` (default parameters and mult-adds) side by side in a PNG, each with its
    Pareto front (needs the optional matplotlib extra). Nothing is written when it is refused."""
    axes = parse_axes(x)
    key = plot_device(summary, x, device)  # before anything is drawn: a refused plot leaves no file
    from lowrank.extras import require

    require("plot", "--png", "--png")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as pyplot
    plotted = [(axis, plot_series(summary, axis, metric=metric, device=key)) for axis in axes]
    if not any(series for _, series in plotted):
        raise UserError(f"nothing to plot: no run of this sweep has a {metric} yet", key="--png",
                        hint="wait for runs to finish (lowrank compare show SWEEP), or pick --metric")
    figure, grid = pyplot.subplots(1, len(axes), figsize=(5.5 * len(axes), 4.2), constrained_layout=True,
                                   squeeze=False)
    for axis_plot, (axis, series) in zip(grid[0], plotted):
        front = front_of(series, axis)
        if len(front) > 1:
            axis_plot.plot([fx for fx, _ in front], [fy for _, fy in front], linestyle="--", color="gray",
                           alpha=0.7, label="Pareto front", zorder=1)
        for method, (xs, ys, stds, x_stds) in series.items():
            axis_plot.errorbar(xs, ys, yerr=stds, xerr=x_stds if axis.measured else None, marker="o", capsize=3,
                               label=method, zorder=2)
        axis_plot.set_xscale("log")
        axis_plot.set_xlabel(axis_label(axis, key, summary))
        axis_plot.set_ylabel(ERROR_METRICS.get(metric, metric))
        axis_plot.grid(True, which="both", alpha=0.3)
        if series:
            axis_plot.legend()
    if title:
        figure.suptitle(title)
    path = Path(path)
    figure.savefig(path, dpi=120)
    pyplot.close(figure)
    return path


def fmt_mean_std(mean: float | None, std: float | None, digits: int = 2) -> str:
    """``12.34 ± 0.56`` (``12.34`` for one seed, ``-`` for none)."""
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "-"
    return f"{mean:.{digits}f}" + (f" ± {std:.{digits}f}" if std is not None else "")
