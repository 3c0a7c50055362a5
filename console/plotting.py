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
    from lowrank.run_files import number

    epoch = number(record.get("epoch"))
    if epoch is None:
        return None
    batch, batches = number(record.get("batch")), number(record.get("batches"))
    if record.get("event") == "step" and batch and batches:
        return epoch - 1 + batch / batches
    return epoch


def curves(records: Iterable[dict[str, Any]], metric: str = "loss") -> Series:
    """``{"train": (xs, ys), "val": (xs, ys)}`` for ``metric`` from metrics.jsonl events.

    Points whose value or position is missing, not a number, NaN or infinite are skipped
    (a diverged run's last NaN loss, or a hand-edited line), never plotted or raised on.
    """
    from lowrank.run_files import number

    steps: dict[float, float] = {}
    epochs: dict[float, float] = {}
    val: dict[float, float] = {}
    for record in records:
        value, x = number(record.get(metric)), _x(record)
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

    from console.safe_text import clean

    charts = []
    for metric in metrics:
        plt.clear_figure()
        if not color:
            plt.theme("clear")
        plotted = 0
        for label, records in runs:
            for split, (xs, ys) in curves(records, metric).items():
                plt.plot(xs, ys, label=clean(f"{label} {split}"), marker="braille" if split == "train" else "dot")
                plotted += 1
        if not plotted:
            continue
        plt.title(METRICS.get(metric, metric))
        plt.xlabel("epoch")
        plt.plotsize(width or plt.terminal_width() or 100, height or 18)
        charts.append(plt.build())
    plt.clear_figure()
    return "\n".join(charts)
