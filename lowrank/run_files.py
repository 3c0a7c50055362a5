"""Readers of run-directory files that survive any content: each returns data and a reason.

A run directory is written by our worker, but it can also be edited by hand, truncated by
a full disk, or copied from another machine, and every reader (``lowrank ls``, ``logs``,
``plot``, ``compare show``, the console) must keep working and show such a run as
``unreadable: <reason>`` rather than crash or hide it. The readers here never raise for
bad content: a status.json that is a list, ``null``, a directory, not UTF-8 or has fields
of the wrong type; a config.yaml that is a list, binary, or has a section that is a
string; metrics lines that are not objects, not UTF-8, or absurdly long.

Pure Python (json, yaml): importing it loads no torch.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import yaml

from . import safe_yaml

UNREADABLE = "unreadable"  # the state readers show for a run whose files cannot be read
UNREADABLE_KEY = "_unreadable"  # in a config dict read for display: why config.yaml could not be read
MAX_LINE_BYTES = 1 << 20  # a metrics line longer than 1 MiB is not one of our events: skipped


# status.json fields the readers compute with, and the types they must have (None always allowed)
_NUMBER = (int, float)
_STATUS_FIELDS: dict[str, tuple[type, ...]] = {
    **{key: (int,) for key in ("pid", "pgid", "epoch", "epochs", "launch_epoch", "exit_code", "best_epoch",
                               "steps_per_epoch", "params", "macs", "dense_params", "dense_macs", "budget_target",
                               "world_size")},
    **{key: _NUMBER for key in ("best_val_err1", "last_loss", "last_val_err1", "final_val_err1", "test_err1",
                                "test_err5", "test_loss", "hp", "budget_gap", "train_seconds", "sweep_budget",
                                "create_time", "teacher_err1", "teacher_claimed_err1", "elapsed_before")},
    **{key: (str,) for key in ("state", "name", "run_id", "host", "launcher_host", "error", "started", "ended",
                               "created", "launched", "heartbeat", "method", "preset", "sweep", "device",
                               "waiting")},
}
# config.yaml sections that must be mappings when present
_CONFIG_SECTIONS = ("model", "data", "substitute", "train", "log", "resources", "teacher", "distill", "imitation")


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _read_text(path: Path, what: str) -> tuple[str | None, str | None]:
    """(text, None) or (None, reason) for a file that is missing, a directory, unreadable or not UTF-8."""
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        return None, f"{what} is missing"
    except IsADirectoryError:
        return None, f"{what} is a directory"
    except OSError as error:
        return None, f"{what} cannot be read ({error.strerror or error})"
    if b"\x00" in raw:
        return None, f"{what} is binary"
    try:
        return raw.decode("utf-8"), None
    except UnicodeDecodeError as error:
        return None, f"{what} is not UTF-8 (byte 0x{raw[error.start]:02x} at offset {error.start})"


def _finite(value: Any) -> bool:
    return not isinstance(value, float) or math.isfinite(value)


def check_status(data: Any, what: str = "status.json") -> tuple[dict[str, Any], str | None]:
    """A status dict whose known fields have usable types, and the first problem found (or None).

    Fields of the wrong type (``"epoch": "three"``, ``"gpus": "0"``) and non-finite numbers
    are dropped, so no reader trips over them; a non-object file gives an empty status.
    """
    if not isinstance(data, dict):
        return {}, f"{what} holds {_kind(data)}, not an object"
    status = dict(data)
    problems = []
    for key, types in _STATUS_FIELDS.items():
        value = status.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, types) or not _finite(value):
            wanted = "a number" if types is _NUMBER else "an integer" if types == (int,) else "a string"
            problems.append(f"{key} is {_kind(value) if _finite(value) else value!r}, expected {wanted}")
            del status[key]
    gpus = status.get("gpus")
    if gpus is not None and not (isinstance(gpus, list) and all(isinstance(g, int) and not isinstance(g, bool)
                                                                for g in gpus)):
        problems.append(f"gpus is {_kind(gpus)}, expected a list of GPU indices")
        del status["gpus"]
    if problems:
        return status, f"{what}: {problems[0]}" + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else "")
    return status, None


def load_status(path: Path, states: tuple[str, ...] | None = None) -> tuple[dict[str, Any], str | None]:
    """status.json checked: (status, None), or (what could be salvaged, the reason it is unreadable).

    ``states``: the states a reader knows; any other value of ``state`` is a problem too.
    """
    text, problem = _read_text(path, "status.json")
    if text is None:
        return {}, problem
    try:
        data = json.loads(text)
    except RecursionError:
        return {}, "status.json is nested too deeply"
    except ValueError as error:
        return {}, f"status.json is not valid JSON ({getattr(error, 'msg', error)} at line {getattr(error, 'lineno', '?')})"
    status, problem = check_status(data)
    if problem is None and states is not None and status.get("state") not in states:
        problem = ("status.json has no state" if status.get("state") is None
                   else f"status.json: unknown state {status['state']!r}")
    return status, problem


def config_for_display(path: Path) -> dict[str, Any]:
    """config.yaml for listing: what could be read, with the reason under :data:`UNREADABLE_KEY` if any."""
    config, problem = load_config(path)
    return {**config, UNREADABLE_KEY: problem} if problem else config


def load_config(path: Path) -> tuple[dict[str, Any], str | None]:
    """config.yaml as a dict for display: (config, None), or (what could be salvaged, the reason)."""
    text, problem = _read_text(path, "config.yaml")
    if text is None:
        return {}, problem
    try:
        data = safe_yaml.load(text, loader=safe_yaml.FAST_LOADER)
    except safe_yaml.TooLarge as error:
        return {}, f"config.yaml refused: {error}"
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        return {}, f"config.yaml is not valid YAML{where}"
    except RecursionError:
        return {}, "config.yaml is nested too deeply"
    if not isinstance(data, dict):
        return {}, f"config.yaml holds {_kind(data)}, not a mapping"
    config = dict(data)
    bad = [key for key in _CONFIG_SECTIONS if config.get(key) is not None and not isinstance(config[key], dict)]
    for key in bad:
        del config[key]
    if bad:
        return config, f"config.yaml: section {bad[0]} is {_kind(data[bad[0]])}, expected a mapping"
    return config, None


def parse_lines(data: bytes) -> list[dict[str, Any]]:
    """The JSON objects among newline-separated ``data``; anything else is skipped.

    Skipped: blank lines, lines over :data:`MAX_LINE_BYTES`, lines that are not UTF-8 or
    not JSON, and JSON values that are not objects (``[1, 2]``, ``3``, ``"x"``). NaN and
    Infinity parse (Python's json accepts them); readers that plot or print must treat
    them as missing.
    """
    records = []
    for raw in data.split(b"\n"):
        if not raw.strip() or len(raw) > MAX_LINE_BYTES:
            continue
        try:
            record = json.loads(raw)
        except (ValueError, RecursionError):  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def number(value: Any) -> float | None:
    """``value`` as a finite float, or None (missing, not a number, a bool, NaN or infinite)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None
