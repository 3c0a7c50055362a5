"""How the console writes numbers and runs: the runs-table columns, their cells and sort keys.

Pure functions (no Textual, no I/O) so the watcher thread can format rows off the UI
thread and the table only compares tuples of strings to find the cells that changed.
"""

from __future__ import annotations

import math
from typing import Any, Callable

from console.runs import RunInfo

# (column key, header) in display order; "mark" shows the multi-selection
COLUMNS: tuple[tuple[str, str], ...] = (
    ("mark", " "), ("id", "id"), ("name", "name"), ("model", "model"), ("method", "method"),
    ("budget", "budget/params"), ("state", "state"), ("gpu", "gpu"), ("epoch", "epoch"),
    ("loss", "loss"), ("err", "best err"), ("elapsed", "elapsed"), ("eta", "eta"),
)
DATA_COLUMNS = tuple(key for key, _ in COLUMNS if key != "mark")

# What a narrow terminal keeps: columns are dropped from the end of this order first.
# state, error and progress say more than an id, which is why they come before it.
PRIORITY = ("mark", "state", "err", "epoch", "id", "name", "method", "budget", "eta", "loss", "elapsed",
            "model", "gpu")
# the width a column needs (cells are formatted to fit); id and name are measured from their content
WIDTHS = {"mark": 1, "state": 8, "err": 8, "epoch": 7, "method": 10, "budget": 13, "eta": 8, "loss": 7,
          "elapsed": 8, "model": 9, "gpu": 5}
NAME_MIN, NAME_MID, NAME_MAX, ID_MAX = 10, 24, 48, 24
NAME_GROWS_AFTER = "eta"  # past this column a readable name (up to NAME_MID) beats more columns
CELL_PADDING = 1  # DataTable's default: one blank each side of every cell


def fit_columns(width: int, id_width: int, name_width: int,
                model_width: int = WIDTHS["model"]) -> tuple[tuple[str, int], ...]:
    """The columns shown in ``width`` terminal cells, in display order, with their widths.

    Columns are taken in :data:`PRIORITY` order while they fit (a column that does not fit
    is skipped, a later narrower one may still fit); the name column takes what is left,
    up to its content's width, then the model column (``model_width``: its longest model
    name; it starts at :data:`WIDTHS`' 9). Pure, so every terminal size is testable without a screen.
    """
    natural = dict(WIDTHS, id=max(2, min(id_width, ID_MAX)), name=max(4, min(name_width, NAME_MAX)))
    pad = 2 * CELL_PADDING
    chosen: dict[str, int] = {}
    used = 0
    for key in PRIORITY:
        need = (min(NAME_MIN, natural[key]) if key == "name" else natural[key]) + pad
        if used + need <= width or key == "mark":
            chosen[key] = need - pad
            used += need
        if key == NAME_GROWS_AFTER and "name" in chosen:
            grown = max(chosen["name"], min(natural["name"], NAME_MID, chosen["name"] + width - used))
            used += grown - chosen["name"]
            chosen["name"] = grown
    if "name" in chosen:
        grown = min(natural["name"], chosen["name"] + max(0, width - used))
        used += grown - chosen["name"]
        chosen["name"] = grown
    if "model" in chosen:  # room to spare: whole model names (tiny_convnet, not tiny_conv)
        chosen["model"] = max(chosen["model"], min(model_width, chosen["model"] + max(0, width - used)))
    return tuple((key, chosen[key]) for key, _ in COLUMNS if key in chosen)


def short_ids(run_ids: list[str] | tuple[str, ...]) -> dict[str, str]:
    """Each run id -> its shortest unique tail of whole ``-`` parts (usually the 4-hex suffix,
    ``20240301-120500-wrn-live-a006`` -> ``a006``; ``live-a006`` when another run ends in ``a006``).
    Every tail shown is accepted back as a run id (:meth:`console.runs.RunStore.resolve`)."""
    parts = {rid: rid.split("-") for rid in run_ids}
    depth = {rid: 1 for rid in run_ids}
    while True:
        tails: dict[str, list[str]] = {}
        for rid in run_ids:
            tails.setdefault("-".join(parts[rid][-depth[rid]:]), []).append(rid)
        clashes = [rids for rids in tails.values() if len(rids) > 1]
        if not clashes:
            return {rid: "-".join(parts[rid][-depth[rid]:]) for rid in run_ids}
        grew = False
        for rids in clashes:
            for rid in rids:
                if depth[rid] < len(parts[rid]):
                    depth[rid] += 1
                    grew = True
        if not grew:  # identical ids cannot happen (directory names); guard the loop anyway
            return {rid: rid for rid in run_ids}


def clip(text: str, width: int) -> str:
    """``text`` cut to ``width`` cells with an ellipsis when it is longer."""
    return text if len(text) <= width else text[: max(0, width - 1)] + "…"

STATE_STYLES = {"running": "bold green", "queued": "cyan", "finished": "blue", "failed": "bold red",
                "killed": "yellow", "pruned": "dark_orange"}


def duration(seconds: float | None) -> str:
    """``93`` -> ``1m33s``, ``7322`` -> ``2h02m``, ``None`` -> ``-``."""
    if seconds is None or not math.isfinite(seconds):
        return "-"
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    if seconds < 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"


def count(value: float | None) -> str:
    """Parameters / mult-adds compactly: ``1234567`` -> ``1.23M``."""
    if value is None:
        return "-"
    value = float(value)
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.3g}{unit}"
    return f"{value:.0f}"


def number(value: Any, digits: int = 4) -> str:
    """A float with ``digits`` significant digits, ``-`` when missing."""
    if value is None:
        return "-"
    try:
        return f"{float(value):.{digits}g}"
    except (TypeError, ValueError):
        return str(value)


def pct(value: Any) -> str:
    """An error rate in percent: ``12.345`` -> ``12.35%``."""
    return "-" if value is None else f"{float(value):.2f}%"


def budget_cell(info: RunInfo) -> str:
    """``0.25 / 1.2M``: the budget asked for and the parameters the worker built."""
    budget = "-" if info.budget is None else (count(info.budget) if info.budget > 1 else f"{info.budget:g}")
    return f"{budget} / {count(info.params)}"


def row_cells(info: RunInfo) -> tuple[str, ...]:
    """The runs-table cells of one run, in :data:`DATA_COLUMNS` order."""
    gpus = "cpu" if info.gpus == [] else ",".join(map(str, info.gpus)) if info.gpus else "-"
    epochs = f"{info.epoch if info.epoch is not None else '-'}/{info.epochs if info.epochs is not None else '-'}"
    return (info.run_id, info.name or "", info.model or "-", info.method or "-", budget_cell(info),
            info.state_shown, gpus, epochs, number(info.last_loss), pct(info.best_err1), duration(info.elapsed_s),
            duration(info.eta_s))


def _or_none(getter: Callable[[RunInfo], Any]) -> Callable[[RunInfo], tuple]:
    """Missing values sort last whatever their type."""
    def key(info: RunInfo) -> tuple:
        value = getter(info)
        return (value is None, value if value is not None else 0)
    return key


SORT_KEYS: dict[str, Callable[[RunInfo], Any]] = {
    "mark": _or_none(lambda info: info.run_id),
    "id": _or_none(lambda info: info.run_id),
    "name": _or_none(lambda info: info.name),
    "model": _or_none(lambda info: info.model),
    "method": _or_none(lambda info: info.method),
    "budget": _or_none(lambda info: info.params if info.params is not None else info.budget),
    "state": _or_none(lambda info: info.state),
    "gpu": _or_none(lambda info: ",".join(map(str, info.gpus)) if info.gpus is not None else None),
    "epoch": _or_none(lambda info: info.epoch),
    "loss": _or_none(lambda info: info.last_loss),
    "err": _or_none(lambda info: info.best_err1),
    "elapsed": _or_none(lambda info: info.elapsed_s),
    "eta": _or_none(lambda info: info.eta_s),
}


def matches(info: RunInfo, query: str) -> bool:
    """The ``/`` filter: words naming a state (``running``, ``state:failed``) select those
    states (any of them); every other word must appear in id, name, model or method."""
    from lowrank.rundir import STATES

    states: set[str] = set()
    words: list[str] = []
    for word in query.lower().split():
        bare = word.removeprefix("state:")
        if bare in STATES:
            states.add(bare)
        else:
            words.append(word)
    if states and info.state not in states:
        return False
    haystack = " ".join(str(part) for part in (info.run_id, info.name, info.model, info.method) if part).lower()
    return all(word in haystack for word in words)
