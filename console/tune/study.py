"""Study manifests and storage: ``$LOWRANK_HOME/studies/<study>.json`` (+ ``<study>.journal``).

The manifest records what a study is (preset, overrides, space, metric, pruner, method and
budget, backend, storage URL) and which run each trial got, so ``tune show``, ``tune
resume`` and the console find everything from the study's name. It is written atomically
and changed under a lock. The optuna study itself lives in the storage the manifest names:
by default the journal file beside it (see :func:`lowrank.trial.open_storage` for why not
SQLite), or any URL given with ``--storage``.
"""

from __future__ import annotations

import contextlib
import json
import re
import secrets
import time
from pathlib import Path
from typing import Any, Iterator, Mapping

from lowrank.errors import UserError
from lowrank.rundir import atomic_write_text, file_lock, lowrank_home, read_json
from lowrank.trial import JOURNAL_PREFIX

STUDIES_DIR = "studies"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,80}$")


def studies_root(home: Path | None = None) -> Path:
    return Path(home or lowrank_home()) / STUDIES_DIR


def manifest_path(name: str, home: Path | None = None) -> Path:
    return studies_root(home) / f"{name}.json"


def default_storage(name: str, home: Path | None = None) -> str:
    """``journal:$LOWRANK_HOME/studies/<name>.journal``: nothing to set up, safe with concurrent workers."""
    return f"{JOURNAL_PREFIX}{(studies_root(home) / f'{name}.journal').resolve()}"


def new_study_name(preset_name: str) -> str:
    """``<preset name>-YYYYmmdd-HHMMSS-<2 hex>``: unique, sortable within a preset."""
    safe = "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in preset_name)[:40] or "study"
    return f"{safe}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(1)}"


def check_name(name: str, home: Path | None = None) -> str:
    """A new study's name: letters, digits, ``_.-``; not taken in this home."""
    if not _NAME.match(name) or name in ("last", "latest"):
        raise UserError(f"bad study name {name!r}", key="--name",
                        hint="letters, digits, '_', '.', '-' (not 'last'), e.g. --name wd-lr")
    if manifest_path(name, home).exists():
        raise UserError(f"study {name!r} exists already", key="--name",
                        hint=f"lowrank tune resume {name} --trials N adds trials to it")
    return name


def write_manifest(manifest: Mapping[str, Any], home: Path | None = None) -> Path:
    path = manifest_path(manifest["study"], home)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(manifest, indent=2, default=str))
    return path


def read_manifest(name: str, home: Path | None = None) -> dict[str, Any]:
    data = read_json(manifest_path(name, home))
    if not data or data.get("study") != name:
        raise UserError(f"no study {name!r} in {studies_root(home)}", hint="lowrank tune ls")
    problem = manifest_problem(data)
    if problem is not None:
        raise UserError(f"study {name!r} is unreadable: {problem}", file=str(manifest_path(name, home)),
                        hint="the manifest was damaged or edited by hand; start a new study with lowrank tune")
    return data


def manifest_problem(data: Mapping[str, Any]) -> str | None:
    """Why a study manifest cannot be used (a field of the wrong type), or None.

    The manifest is a file anyone can edit; tune ls/show/resume and the console compute
    with these fields, so a wrong type is refused here in one line instead of crashing them.
    """
    def kind(value: Any) -> str:
        return "null" if value is None else type(value).__name__

    if not isinstance(data.get("storage"), str):
        return f"storage is {kind(data.get('storage'))}, expected a storage URL"
    space = data.get("space")
    if not isinstance(space, list) or not all(isinstance(item, dict) and isinstance(item.get("key"), str)
                                             and isinstance(item.get("spec"), str) for item in space):
        return "space is not a list of {key, spec} entries"
    if not isinstance(data.get("pruner"), dict) or not isinstance(data["pruner"].get("name"), str):
        return "pruner is not a mapping with a name"
    for key in ("metric", "preset", "created"):
        if not isinstance(data.get(key), (str, type(None))):
            return f"{key} is {kind(data.get(key))}, expected text"
    for key in ("trials_requested", "epochs", "parallel", "seed"):
        value = data.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            return f"{key} is {kind(value)}, expected a whole number"
    trials = data.get("trials", {})
    if not isinstance(trials, dict) or not all(
            isinstance(entry, dict) and isinstance(entry.get("run_id"), (str, type(None)))
            and isinstance(entry.get("params", {}), dict) for entry in trials.values()):
        return "trials is not a mapping of trial number -> {run_id, params}"
    return None


@contextlib.contextmanager
def manifest_lock(name: str, home: Path | None = None) -> Iterator[None]:
    with file_lock(studies_root(home) / f".{name}.lock"):
        yield


def record_trial(name: str, number: int, run_id: str | None, home: Path | None = None, **facts: Any) -> None:
    """Note in the manifest which run trial ``number`` got (or why it got none)."""
    with manifest_lock(name, home):
        manifest = read_manifest(name, home)
        manifest.setdefault("trials", {})[str(number)] = {"run_id": run_id, **facts}
        write_manifest(manifest, home)


def study_names(home: Path | None = None) -> list[str]:
    """Every study of ``home``, oldest first (by the manifest's ``created``)."""
    root = studies_root(home)
    if not root.is_dir():
        return []
    found = []
    for path in root.glob("*.json"):
        manifest = read_json(path)
        if manifest.get("study") == path.stem:
            found.append((str(manifest.get("created") or ""), path.stem))
    return [name for _, name in sorted(found)]


def resolve_study(text: str, home: Path | None = None) -> str:
    """The study ``text`` names: its name, ``last``, or a unique prefix / part of one."""
    names = study_names(home)
    text = text.strip()
    if text in names:
        return text
    if text in ("last", "latest") and names:
        return names[-1]
    matches = [name for name in names if name.startswith(text)] or [name for name in names if text in name]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise UserError(f"no study matches {text!r} in {studies_root(home)}",
                        hint=f"recent studies: {', '.join(names[-5:]) or 'none yet (lowrank tune PRESET --space ...)'}")
    raise UserError(f"{text!r} matches {len(matches)} studies: {', '.join(matches[:10])}", hint="give more of the name")


def load_study(manifest: Mapping[str, Any], *, seed: int | None = None):
    """The optuna study of a manifest, with its sampler and pruner (optuna imported here)."""
    import optuna

    from lowrank.trial import build_pruner, open_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna.samplers.TPESampler(seed=seed) if seed is not None else None
    return optuna.load_study(study_name=manifest["study"], storage=open_storage(manifest["storage"]),
                             sampler=sampler, pruner=build_pruner(manifest["pruner"]))


def create_study(manifest: Mapping[str, Any]):
    """Create the optuna study a new manifest describes; a name the storage holds already is refused."""
    import optuna

    from lowrank.trial import build_pruner, open_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = open_storage(manifest["storage"])
    try:
        return optuna.create_study(study_name=manifest["study"], storage=storage, direction="minimize",
                                   pruner=build_pruner(manifest["pruner"]),
                                   sampler=optuna.samplers.TPESampler(seed=manifest.get("seed")))
    except optuna.exceptions.DuplicatedStudyError:
        raise UserError(f"the storage {manifest['storage']} already holds a study {manifest['study']!r}",
                        key="--name", hint="choose another --name") from None
