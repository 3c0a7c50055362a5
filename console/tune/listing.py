"""Studies and their trials from the manifests and the runs' status.json: no optuna, no torch.

The console (and ``tune ls``) lists studies from here, so it stays fast and never writes
to a study. A trial's value is its run's metric when the run finished or was pruned (the
best so far, for a pruned run); trials that got no run show the reason the manifest kept.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lowrank.rundir import RunDir, read_json, runs_root
from lowrank.run_files import number

from .study import manifest_path, manifest_problem, study_names


def study_trials(manifest: dict[str, Any], home: Path | None = None) -> list[dict[str, Any]]:
    """One row per trial the manifest knows: number, run, state, value, epoch, params."""
    home = Path(home) if home else None
    metric = manifest.get("metric") or "best_val_err1"
    rows = []
    trials = manifest.get("trials") or {}
    for key in sorted(trials, key=lambda text: int(text) if str(text).isdigit() else 1 << 30):
        entry = trials[key] if isinstance(trials[key], dict) else {}
        run_id = entry.get("run_id")
        status = RunDir(runs_root(home) / run_id).read_status() if isinstance(run_id, str) else {}
        state = status.get("state") or ("failed" if entry.get("error") else "vanished")
        value = number(status.get(metric)) if state in ("finished", "pruned") else None
        rows.append({"number": int(key) if str(key).isdigit() else key, "run_id": run_id, "state": state,
                     "value": value, "epoch": status.get("epoch"), "epochs": status.get("epochs"),
                     "params": entry.get("params") or status.get("tune_params") or {},
                     "error": status.get("error") or entry.get("error")})
    return rows


def list_studies(home: Path | None = None) -> list[dict[str, Any]]:
    """One summary per study, oldest first: name, preset, space, metric, pruner, trial states, best."""
    home = Path(home) if home else None
    out = []
    for name in study_names(home):
        manifest = read_json(manifest_path(name, home))
        problem = manifest_problem(manifest)
        if problem is not None:  # shown, never hidden, never a crash
            out.append({"study": name, "created": None, "preset": None, "space": [], "metric": None, "pruner": None,
                        "backend": None, "trials_requested": None, "trials": 0,
                        "states": {f"unreadable: {problem}": 1}, "best": None, "rows": []})
            continue
        rows = study_trials(manifest, home)
        states: dict[str, int] = {}
        for row in rows:
            states[row["state"]] = states.get(row["state"], 0) + 1
        finished = [row for row in rows if row["state"] == "finished" and row["value"] is not None]
        best = min(finished, key=lambda row: row["value"]) if finished else None
        out.append({"study": name, "created": manifest.get("created"), "preset": manifest.get("preset"),
                    "space": [f"{item.get('key')}={item.get('spec')}" for item in manifest.get("space") or []],
                    "metric": manifest.get("metric"), "pruner": (manifest.get("pruner") or {}).get("name"),
                    "backend": manifest.get("backend"), "trials_requested": manifest.get("trials_requested"),
                    "trials": len(rows), "states": dict(sorted(states.items())),
                    "best": None if best is None else {"number": best["number"], "value": best["value"],
                                                       "run_id": best["run_id"], "params": best["params"]},
                    "rows": rows})
    return out
