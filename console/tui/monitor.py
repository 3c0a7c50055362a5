"""Assemble what the detail pane shows (thread side): overlaid curves, the log tail, the status.

:func:`detail_for` is called by the app's runs worker every poll; it reads only new
metrics bytes and re-reads the log only when its size or mtime changed, and returns a
:class:`~.messages.Detail` whose ``key`` changes exactly when something shown changed.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from .messages import Detail
from .watch import MetricsCache, RunRecord, log_path, log_tail

MAX_OVERLAY = 8  # curves of more runs than this are unreadable in a terminal plot
LOG_LINES = 200
CURVES_SECONDS = 2.0


def label_of(run_id: str) -> str:
    """``20240101-120000-quickstart-3f2a`` -> ``quickstart-3f2a`` (unique, short)."""
    parts = run_id.split("-", 2)
    return parts[2] if len(parts) == 3 else run_id


def detail_for(records: dict[str, RunRecord], focus: str | None, marked: tuple[str, ...], metrics: MetricsCache,
               home: Path, cache: dict[str, Any]) -> Detail:
    """The detail of ``focus`` with the curves of ``marked`` (or of ``focus`` when none is marked)."""
    overlay = [rid for rid in marked if rid in records][:MAX_OVERLAY] or ([focus] if focus in records else [])
    now = time.monotonic()
    if overlay != cache.get("overlay") or now - cache.get("curves_at", 0.0) >= CURVES_SECONDS:
        # new data of the same runs is drawn at most every CURVES_SECONDS (a plot costs ~15 ms)
        curves, versions = [], []
        for rid in overlay:
            series, version = metrics.get(rid)
            curves.append((label_of(rid), series))
            versions.append((rid, version))
        cache.update(overlay=overlay, curves=curves, versions=tuple(versions), curves_at=now)
    curves, versions = cache["curves"], cache["versions"]
    record = records.get(focus) if focus else None
    lines: list[str] = []
    log_key: tuple = ()
    if record is not None:
        path = log_path(home, record.run_id)
        try:
            stat = os.stat(path)
            log_key = (record.run_id, stat.st_mtime_ns, stat.st_size)
        except FileNotFoundError:
            log_key = (record.run_id, None)
        if cache.get("log_key") != log_key:
            cache["log_key"], cache["lines"] = log_key, log_tail(path, LOG_LINES)
        lines = cache["lines"]
    status_key = (json.dumps(record.status, sort_keys=True, default=str), record.cells) if record else None
    return Detail(run_id=focus if record else None, record=record, curves=curves, log_lines=lines,
                  key=(versions, focus, status_key, log_key))
