"""Live loss and top-1 error curves (train and val) of one or several runs, overlaid (textual-plotext).

The plots are mounted just after the first frame: importing plotext would otherwise
delay the console's first paint. Data that arrives before is kept and drawn then.
"""

from __future__ import annotations

import math
from typing import Any

from textual.containers import Horizontal
from textual.widgets import Static

from console.plotting import METRICS

from .watch import Series

MAX_POINTS = 160  # per series: about what a braille plot can resolve; plotext slows with points
PLOTTED = ("loss", "err1")


def thin(xs: list[float], ys: list[float], limit: int = MAX_POINTS) -> tuple[list[float], list[float]]:
    """Every k-th point (and always the last) so a long run draws as fast as a short one."""
    if len(xs) <= limit:
        return xs, ys
    step = -(-len(xs) // limit)
    idx = list(range(0, len(xs), step))
    if idx[-1] != len(xs) - 1:
        idx.append(len(xs) - 1)
    return [xs[i] for i in idx], [ys[i] for i in idx]


def draw_metric(plot: Any, metric: str, runs: list[tuple[str, dict[str, Series]]]) -> None:
    """Redraw ``plot`` (a PlotextPlot) with ``metric`` of every run: train solid, val dotted."""
    plt = plot.plt
    plt.clear_figure()
    plt.title(f"{METRICS.get(metric, metric)} by epoch")  # no x label: a row a short terminal needs
    plotted = 0
    for label, by_metric in runs:
        for split, (xs, ys) in (by_metric.get(metric) or {}).items():
            xs, ys = thin(xs, ys)
            plt.plot(xs, ys, label=f"{label} {split}" if len(runs) > 1 else split,
                     marker="braille" if split == "train" else "dot")
            plotted += 1
    if plotted:
        round_ticks(plt, runs, metric)
    else:
        plt.text("no metrics yet", 0.5, 0.5, alignment="center")
        plt.xlim(0, 1)
        plt.ylim(0, 1)
    plot.refresh()


def round_ticks(plt: Any, runs: list[tuple[str, dict[str, Series]]], metric: str) -> None:
    """Whole epochs on x and round values on y (plotext's own ticks read ``1.38  2.25``)."""
    from .scatter import linear_ticks, tick_label

    xs = [x for _, by_metric in runs for x_list, _ in (by_metric.get(metric) or {}).values() for x in x_list]
    ys = [y for _, by_metric in runs for _, y_list in (by_metric.get(metric) or {}).values() for y in y_list]
    finite = [y for y in ys if math.isfinite(y)]
    if xs:
        ticks = [t for t in linear_ticks(min(xs), max(xs), most=6) if float(t).is_integer()] or [round(min(xs))]
        plt.xticks(ticks, [f"{t:g}" for t in ticks])
    if finite:
        ticks = linear_ticks(min(finite), max(finite), most=5)
        plt.yticks(ticks, [tick_label(t) for t in ticks])


class CurvesView(Horizontal):
    """Loss beside top-1 error."""

    DEFAULT_CSS = """
    CurvesView { height: 1fr; width: 3fr; }
    CurvesView > * { width: 1fr; height: 1fr; }
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._plots: dict[str, Any] = {}
        self._pending: list[tuple[str, dict[str, Series]]] | None = None

    def on_mount(self) -> None:
        self.mount(Static("loading plots...", id="plots-placeholder"))
        self.call_after_refresh(self._mount_plots)

    async def _mount_plots(self) -> None:
        from textual_plotext import PlotextPlot

        self._plots = {metric: PlotextPlot(id=f"plot-{metric}") for metric in PLOTTED}
        await self.query("#plots-placeholder").remove()
        await self.mount(*self._plots.values())
        if self._pending is not None:
            self.show(self._pending)

    def show(self, runs: list[tuple[str, dict[str, Series]]]) -> None:
        """Redraw both plots with ``runs`` overlaid (label, {metric: series})."""
        self._pending = runs
        for metric, plot in self._plots.items():
            draw_metric(plot, metric, runs)
