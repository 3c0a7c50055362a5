"""Loss and error curves of one or more runs in the terminal (plotext), for ``lowrank plot``.

:func:`curves` turns a run's metrics events into series (pure, tested); :func:`render`
draws them, one chart per metric with every run overlaid. Any logged number is a metric
(:func:`available_metrics`); the x axis is the epoch, the global step or the training time
across resumes (:func:`positions`). Train points come from ``step`` events when there are
any, else from ``epoch`` events; validation from ``eval`` events. A resumed run repeats the
epochs after its checkpoint: the later record of an x wins.
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

METRICS = {"loss": "loss (cross-entropy)", "err1": "top-1 error %", "err5": "top-5 error %"}

Series = dict[str, tuple[list[float], list[float]]]


AXES = {"epoch": "epoch", "step": "step", "time": "training time (s, across resumes)"}
# keys of a metrics event that place it, never plotted as a metric
POSITION_KEYS = {"event", "epoch", "step", "batch", "batches", "time", "split", "stage", "state", "seconds"}


def _epoch_x(record: dict[str, Any]) -> float | None:
    from lowrank.run_files import number

    epoch = number(record.get("epoch"))
    if epoch is None:
        return None
    batch, batches = number(record.get("batch")), number(record.get("batches"))
    if record.get("event") == "step" and batch and batches:
        return epoch - 1 + batch / batches
    return epoch


def positions(records: Iterable[dict[str, Any]], x: str = "epoch") -> list[tuple[dict[str, Any], float]]:
    """Each event with its position on axis ``x`` (events that cannot be placed are left out).

    - ``epoch``: fractional epochs for steps (epoch - 1 + batch/batches), the epoch otherwise;
    - ``step``: the global optimiser step (an epoch or eval event sits at the epoch's last step);
    - ``time``: seconds of training since the run first started, summed over its attempts: each
      ``start`` event (a launch or a resume) begins a segment, and the time between the end of
      one attempt and the next start is not counted.
    """
    from lowrank.run_files import number

    out: list[tuple[dict[str, Any], float]] = []
    batches: float | None = None
    offset, segment_start, segment_last = 0.0, None, None
    for record in records:
        if not isinstance(record, dict):
            continue
        if record.get("event") == "step" and number(record.get("batches")):
            batches = number(record.get("batches"))
        if x == "epoch":
            where = _epoch_x(record)
        elif x == "step":
            where = number(record.get("step")) if record.get("event") == "step" else None
            epoch = number(record.get("epoch"))
            if where is None and record.get("event") in ("epoch", "eval") and epoch is not None and batches:
                where = epoch * batches
        else:  # time
            when = number(record.get("time"))
            if when is None:
                continue
            if record.get("event") == "start" or segment_start is None:
                if segment_start is not None and segment_last is not None:
                    offset += max(0.0, segment_last - segment_start)
                segment_start = when
            segment_last = when
            where = offset + max(0.0, when - segment_start)
        if where is not None:
            out.append((record, float(where)))
    return out


def available_metrics(records: Iterable[dict[str, Any]]) -> set[str]:
    """Every numeric key logged by a step, epoch or eval event (lr, throughput, kd, at, sparsity ...)."""
    from lowrank.run_files import number

    found = set()
    for record in records:
        if isinstance(record, dict) and record.get("event") in ("step", "epoch", "eval"):
            found.update(key for key, value in record.items()
                         if key not in POSITION_KEYS and not isinstance(value, bool) and number(value) is not None)
    return found


def curves(records: Iterable[dict[str, Any]], metric: str = "loss", x: str = "epoch") -> Series:
    """``{"train": (xs, ys), "val": (xs, ys)}`` for ``metric`` from metrics.jsonl events.

    Points whose value or position is missing, not a number, NaN or infinite are skipped
    (a diverged run's last NaN loss, or a hand-edited line), never plotted or raised on.
    """
    from lowrank.run_files import number

    steps: dict[float, float] = {}
    epochs: dict[float, float] = {}
    val: dict[float, float] = {}
    for record, where in positions(records, x):
        value = number(record.get(metric))
        if value is None:
            continue
        event = record.get("event")
        if event == "step" and record.get("split", "train") == "train":
            if x == "epoch" and "batch" not in record and record.get("step") is not None:
                continue  # a step without batch position cannot be placed on the epoch axis
            steps[where] = float(value)
        elif event == "epoch" and record.get("split", "train") == "train":
            epochs[where] = float(value)
        elif event == "eval" or (event is not None and record.get("split") == "val"):
            val[where] = float(value)
    out: Series = {}
    train = steps or epochs
    if train:
        xs = sorted(train)
        out["train"] = (xs, [train[x] for x in xs])
    if val:
        xs = sorted(val)
        out["val"] = (xs, [val[x] for x in xs])
    return out


def render(runs: Sequence[tuple[str, list[dict[str, Any]]]], *, metrics: Sequence[str] = ("loss", "err1"),
           width: int | None = None, height: int | None = None, color: bool = True, x: str = "epoch") -> str:
    """Charts (one per metric) with every run's train and val curves overlaid."""
    import plotext as plt

    from console.safe_text import clean

    charts = []
    for metric in metrics:
        plt.clear_figure()
        if not color:
            plt.theme("clear")
        plotted = 0
        for label, records in runs:
            for split, (xs, ys) in curves(records, metric, x).items():
                plt.plot(xs, ys, label=clean(f"{label} {split}"), marker="braille" if split == "train" else "dot")
                plotted += 1
        if not plotted:
            continue
        plt.title(clean(METRICS.get(metric, metric)))
        plt.xlabel(clean(AXES.get(x, x)))
        plt.plotsize(width or plt.terminal_width() or 100, height or 18)
        charts.append(plt.build())
    plt.clear_figure()
    return "\n".join(charts)
