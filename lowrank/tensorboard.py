"""TensorBoard event files from a run's metrics (``log.tensorboard: true``, an optional extra).

The run's metrics.jsonl stays the record; TensorBoard gets the same numbers, written into
``RUN_DIR/tensorboard/`` so ``tensorboard --logdir $LOWRANK_HOME/runs`` shows every run:

- step events   -> ``step/<key>`` at the global step (loss, err1, lr, throughput, kd, at ...)
- epoch events  -> ``train/<key>`` at the epoch
- eval events   -> ``val/<key>`` at the epoch
- test events   -> ``test/<key>`` at the epoch

Live, the worker attaches a :class:`TensorBoardSink` to its run directory (every appended
metric is also written as scalars); ``lowrank export tensorboard RUN...`` converts the
metrics.jsonl of existing runs with :func:`export_run`. ``torch.utils.tensorboard`` (and the
``tensorboard`` package behind it) is imported only here, only when enabled.
"""

from __future__ import annotations

import atexit
import math
import shutil
from pathlib import Path
from typing import Any, Iterable

from .errors import UserError

FOLDER = "tensorboard"
TAG_PREFIX = {"step": "step", "epoch": "train", "eval": "val", "test": "test"}
NOT_SCALARS = {"event", "epoch", "step", "batch", "batches", "time", "split", "stage"}


def scalars(record: dict[str, Any]) -> list[tuple[str, float, int]]:
    """(tag, value, step) for every finite number in one metrics event (others: none)."""
    prefix = TAG_PREFIX.get(record.get("event"))  # type: ignore[arg-type]
    step = record.get("step") if record.get("event") == "step" else record.get("epoch")
    if prefix is None or not isinstance(step, int) or isinstance(step, bool):
        return []
    out = []
    for key, value in record.items():
        if key in NOT_SCALARS or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if math.isfinite(value):
            out.append((f"{prefix}/{key}", float(value), step))
    return out


def _summary_writer(folder: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise UserError("log.tensorboard needs the tensorboard package", key="log.tensorboard",
                        hint="pip install 'lowrank[tensorboard]' (or set log.tensorboard=false)") from None
    return SummaryWriter(log_dir=str(folder), flush_secs=5)


class TensorBoardSink:
    """Writes each metrics event it is given as TensorBoard scalars; closed at exit."""

    def __init__(self, folder: Path | str) -> None:
        self.writer = _summary_writer(Path(folder))
        self.written = 0
        atexit.register(self.close)

    def __call__(self, record: dict[str, Any]) -> None:
        for tag, value, step in scalars(record):
            self.writer.add_scalar(tag, value, step, walltime=record.get("time"))
            self.written += 1
        if record.get("event") in ("epoch", "eval", "test"):
            self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def attach(run: Any) -> TensorBoardSink:
    """Make every metric the worker appends to ``run`` also go to ``run/tensorboard``."""
    sink = TensorBoardSink(run.file(FOLDER))
    run.metric_sinks.append(sink)
    return sink


def export_run(run: Any, records: Iterable[dict[str, Any]] | None = None) -> int:
    """Rewrite ``run/tensorboard`` from its metrics.jsonl; returns the number of scalars.

    Written into a fresh folder that then replaces the old one, so exporting twice (or a
    run that also logged live) never doubles the points.
    """
    folder = run.file(FOLDER)
    fresh = run.file(FOLDER + ".export")
    shutil.rmtree(fresh, ignore_errors=True)
    sink = TensorBoardSink(fresh)
    try:
        for record in run.read_metrics() if records is None else records:
            sink(record)
    finally:
        sink.close()
    shutil.rmtree(folder, ignore_errors=True)
    fresh.rename(folder)
    return sink.written
