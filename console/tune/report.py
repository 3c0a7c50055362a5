"""``tune show``: the study's best trial, every trial, parameter importance, and plotext plots.

Reading settles first (:func:`console.tune.driver.settle_all`): a trial whose run ended
while no driver was watching is told now, so the report is current even after a Ctrl-C.
Importance is Optuna's (``optuna.importance.get_param_importances``, its default
evaluator) over the completed trials; it needs two of them.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Mapping

from lowrank.rundir import lowrank_home, runs_root

from . import study as studies

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def study_report(name: str, home: Path | None = None) -> dict[str, Any]:
    """Everything ``tune show`` prints, as plain data (``--json`` prints it as is)."""
    import optuna

    from .driver import settle_all

    home = Path(home or lowrank_home()).resolve()
    manifest = studies.read_manifest(name, home)
    try:
        study = studies.load_study(manifest)
    except Exception as error:  # noqa: BLE001 - a missing, damaged or foreign storage: the file's fault
        from lowrank.errors import UserError

        raise UserError(f"cannot open the study's storage {manifest['storage']!r}: {type(error).__name__}: "
                        f"{str(error)[:200]}", file=str(studies.manifest_path(name, home)),
                        hint="the storage (journal file or database) is missing or damaged") from None
    settle_all(study, manifest, home, orphans=False)
    recorded = manifest.get("trials", {})
    trials = []
    for trial in study.get_trials(deepcopy=False):
        run_id = trial.user_attrs.get("run_id") or (recorded.get(str(trial.number)) or {}).get("run_id")
        seconds = (trial.datetime_complete - trial.datetime_start).total_seconds() \
            if trial.datetime_complete and trial.datetime_start else None
        value = trial.value if trial.value is not None and math.isfinite(trial.value) else None
        trials.append({"number": trial.number, "state": trial.state.name.lower(), "value": value,
                       "params": dict(trial.params), "last_epoch": trial.last_step, "run_id": run_id,
                       "run_dir": str(runs_root(home) / run_id) if run_id else None, "seconds": seconds,
                       "error": trial.user_attrs.get("error") or (recorded.get(str(trial.number)) or {}).get("error")})
    complete = [trial for trial in trials if trial["state"] == "complete" and trial["value"] is not None]
    best = min(complete, key=lambda trial: trial["value"]) if complete else None
    importance, importance_note = {}, None
    if len(complete) >= 2:
        try:
            importance = {key: float(value) for key, value in optuna.importance.get_param_importances(study).items()}
        except (RuntimeError, ValueError) as error:
            importance_note = f"importance unavailable: {error}"
    else:
        importance_note = f"importance needs 2 completed trials ({len(complete)} so far)"
    counts: dict[str, int] = {}
    for trial in trials:
        counts[trial["state"]] = counts.get(trial["state"], 0) + 1
    keys = ("study", "created", "preset", "overrides", "space", "metric", "direction", "pruner", "method", "budget",
            "backend", "parallel", "storage", "epochs", "trials_requested")
    return {**{key: manifest.get(key) for key in keys}, "counts": counts, "best": best, "trials": trials,
            "importance": importance, "importance_note": importance_note}


def render_plots(report: Mapping[str, Any], *, width: int | None = None, height: int | None = None,
                 color: bool = True) -> str:
    """The objective against the trial number (with the best so far), and against each parameter."""
    import plotext as plt

    from console.safe_text import clean

    metric = clean(report.get("metric") or "objective")
    done = [t for t in report["trials"] if t["value"] is not None and t["state"] in ("complete", "pruned")]
    if not done:
        return ""
    size = (width or min(plt.terminal_width() or 100, 110), height or 16)
    charts = []

    def finish(title: str, xlabel: str) -> None:
        plt.title(clean(title))
        plt.xlabel(clean(xlabel))
        plt.plotsize(*size)
        charts.append(plt.build())

    plt.clear_figure()
    if not color:
        plt.theme("clear")
    for state, marker in (("complete", "o" if not color else "hd"), ("pruned", "x")):
        points = [(t["number"], t["value"]) for t in done if t["state"] == state]
        if points:
            plt.scatter([p[0] for p in points], [p[1] for p in points], marker=marker,
                        label=f"{state} (value at its last epoch)" if state == "pruned" else state)
    complete = sorted((t["number"], t["value"]) for t in done if t["state"] == "complete")
    if complete:
        best, line = math.inf, []
        for number, value in complete:
            best = min(best, value)
            line.append((number, best))
        plt.plot([p[0] for p in line], [p[1] for p in line], label="best so far")
    finish(f"{metric} vs trial", "trial")

    kinds = {item["key"]: item["spec"].split(":", 1)[0] for item in report.get("space") or []}
    for key, kind in kinds.items():
        plt.clear_figure()
        if not color:
            plt.theme("clear")
        numeric = kind != "cat"
        if not any(key in t["params"] for t in done):  # a key no trial sampled (a changed manifest): no chart
            continue
        for state, marker in (("complete", "o" if not color else "hd"), ("pruned", "x")):
            points = [(t["params"].get(key), t["value"]) for t in done if t["state"] == state and key in t["params"]]
            if not points:
                continue
            if numeric:
                plt.scatter([float(p[0]) for p in points], [p[1] for p in points], marker=marker, label=state)
            else:
                choices = [clean(choice) for choice in dict.fromkeys(str(t["params"].get(key)) for t in done)]
                plt.scatter([choices.index(clean(str(p[0]))) for p in points], [p[1] for p in points], marker=marker,
                            label=state)
                plt.xticks(list(range(len(choices))), choices)
        if kind == "log":
            plt.xscale("log")
        finish(f"{metric} vs {key}" + (" (log scale)" if kind == "log" else ""), key)
    plt.clear_figure()
    text = "\n".join(charts)
    return text if color else _ANSI.sub("", text)
