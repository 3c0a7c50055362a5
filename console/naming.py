"""A run's name when the user did not give one: the preset's name plus what was overridden.

``lowrank run presets/quickstart.yaml --set substitute.method=tt --set substitute.budget=0.1
--set train.lr=0.1`` is named ``quickstart tt@0.1 lr=0.1``, so two runs of one preset are
told apart in ``ls``, the console and plot legends without opening their configs. Overrides
that do not change the experiment (where it runs, logging, data paths) are left out; an
override of ``name`` itself (or ``--name``) is used as given.
"""

from __future__ import annotations

from typing import Any

from lowrank.config import parse_override

# keys that say where or how a run is executed, not what is trained: not part of its name
PLACEMENT_KEYS = ("resources.", "log.", "train.device", "data.workers", "data.root", "data.download",
                  "data.pin_memory", "data.device", "description")
MAX_VALUE = 24


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return ",".join(_value(item) for item in value)
    if isinstance(value, dict):
        return ",".join(f"{key}:{_value(item)}" for key, item in value.items())
    text = str(value)
    return text if len(text) <= MAX_VALUE else text[: MAX_VALUE - 1] + "…"


def override_name(base: str, overrides: list[str]) -> str:
    """``base`` followed by the overrides in short form (``tt@0.1``, ``lr=0.1``)."""
    parsed: dict[str, Any] = {}
    for text in overrides:
        path, value = parse_override(text)
        parsed[".".join(path)] = value
    if "name" in parsed:
        return str(parsed["name"])
    method = parsed.pop("substitute.method", None)
    budget = parsed.pop("substitute.budget", parsed.pop("substitute.budget_params", None))
    words = []
    if method is not None or budget is not None:
        words.append(f"{_value(method) if method is not None else ''}{'@' + _value(budget) if budget is not None else ''}")
    kept = {key: value for key, value in parsed.items() if not key.startswith(PLACEMENT_KEYS)}
    leaves = [key.rsplit(".", 1)[-1] for key in kept]
    for key, value in kept.items():
        leaf = key.rsplit(".", 1)[-1]
        words.append(f"{leaf if leaves.count(leaf) == 1 else key}={_value(value)}")
    return " ".join([base, *words])


def name_run(config: dict[str, Any], overrides: list[str], name: str | None = None) -> dict[str, Any]:
    """``config`` (a resolved dict) with its name: ``name`` if given, else :func:`override_name`."""
    config = dict(config)
    config["name"] = name if name else override_name(str(config.get("name") or "run"), overrides)
    return config
