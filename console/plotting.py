"""Loss and error curves of one or more runs in the terminal (plotext), for ``lowrank plot``.

:func:`curves` turns a run's metrics events into series (pure, tested); :func:`render`
draws them, one chart per metric with every run overlaid. The x axis is the epoch;
train points come from ``step`` events (fractional epochs: epoch - 1 + batch/batches)
when there are any, else from ``epoch`` events; validation from ``eval`` events. A
resumed run repeats the epochs after its checkpoint: the later record of an x wins.
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

METRICS = {"loss": "loss (cross-entropy)", "err1": "top-1 error %", "err5": "top-5 error %"}

Series = dict[str, tuple[list[float], list[float]]]


def _x(record: dict[str, Any]) -> float | None:
    epoch = record.get("epoch")
    if epoch is None:
        return None
    if record.get("event") == "step" and record.get("batch") and record.get("batches"):
        return float(epoch) - 1 + float(record["batch"]) / float(record["batches"])
    return float(epoch)


def curves(records: Iterable[dict[str, Any]], metric: str = "loss") -> Series:
    """``{"train": (xs, ys), "val": (xs, ys)}`` for ``metric`` from metrics.jsonl events."""
    steps: dict[float, float] = {}
    epochs: dict[float, float] = {}
    val: dict[float, float] = {}
    for record in records:
        value, x = record.get(metric), _x(record)
        if value is None or x is None:
            continue
        event = record.get("event")
        if event == "step" and record.get("split", "train") == "train":
            if "batch" not in record and record.get("step") is not None:
                continue  # a step without batch position cannot be placed on the epoch axis
            steps[x] = float(value)
        elif event == "epoch" and record.get("split", "train") == "train":
            epochs[x] = float(value)
        elif event == "eval" or (event is not None and record.get("split") == "val"):
            val[x] = float(value)
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
           width: int | None = None, height: int | None = None, color: bool = True) -> str:
    """Charts (one per metric) with every run's train and val curves overlaid."""
    import plotext as plt

    charts = []
    for metric in metrics:
        plt.clear_figure()
        if not color:
            plt.theme("clear")
        plotted = 0
        for label, records in runs:
            for split, (xs, ys) in curves(records, metric).items():
                plt.plot(xs, ys, label=f"{label} {split}", marker="braille" if split == "train" else "dot")
                plotted += 1
        if not plotted:
            continue
        plt.title(METRICS.get(metric, metric))
        plt.xlabel("epoch")
        plt.plotsize(width or plt.terminal_width() or 100, height or 18)
        charts.append(plt.build())
    plt.clear_figure()
    return "\n".join(charts)
