"""Pure helpers of the console's error-vs-cost scatter: round axis ticks on a log axis, a marker
per method that differs without colour, and the Pareto front (no Textual, no plotext: testable).

The Pareto front is :func:`console.compare.pareto_front`, the one ``compare show`` draws
(``higher_is_better`` for throughput); it is re-exported here."""

from __future__ import annotations

import math
from typing import Sequence

from console.compare import pareto_front  # noqa: F401  (re-exported: the compare view's front)

from .format import count

# filled markers for finished runs, the hollow twin of each for running runs (current best)
FILLED = ("●", "▲", "■", "◆", "▼", "★", "✚", "✖")
HOLLOW = ("○", "△", "□", "◇", "▽", "☆", "+", "x")


def marker(index: int, hollow: bool = False) -> str:
    """The marker of the ``index``-th method; hollow for a running run's current best."""
    return (HOLLOW if hollow else FILLED)[index % len(FILLED)]


def log_ticks(low: float, high: float, most: int = 6) -> list[float]:
    """Round values (1, 2, 5 x 10^k) between ``low`` and ``high`` for a log axis, at most ``most``.

    Where the range holds no round value (3786 .. 4491) the two ends rounded inwards to the
    fewest significant digits that keep them apart are used (``3.8k``, ``4.4k``; ``3.76k``,
    ``3.78k`` for 3754 .. 3786), so a tick never reads ``3786.0`` and never falls outside.
    """
    if low <= 0 or high <= 0:
        return []
    low, high = min(low, high), max(low, high)
    for mantissas in ((1, 2, 5), (1, 2, 3, 5, 7), (1, 1.5, 2, 3, 4, 5, 6, 8)):
        ticks = [m * 10.0 ** e for e in range(math.floor(math.log10(low)) - 1, math.ceil(math.log10(high)) + 1)
                 for m in mantissas]
        inside = [t for t in ticks if low <= t * (1 + 1e-9) and t <= high * (1 + 1e-9)]
        if len(inside) >= 2:
            break
    if len(inside) < 2:
        inside = _rounded_ends(low, high)
    while len(inside) > most:
        inside = inside[::2]
    return inside


def _rounded_ends(low: float, high: float) -> list[float]:
    """``low`` rounded up and ``high`` rounded down to the fewest significant digits (2 to 4)
    that keep them apart; the single rounded value where the range is narrower still."""
    for digits in (2, 3, 4):
        step = 10.0 ** (math.floor(math.log10(high)) - digits + 1)
        up, down = math.ceil(low / step - 1e-9) * step, math.floor(high / step + 1e-9) * step
        if up < down:
            return [float(f"{up:.{digits}g}"), float(f"{down:.{digits}g}")]
    return [float(f"{(low + high) / 2:.3g}")]


def log_axis(xs: Sequence[float], most: int = 6) -> tuple[float, float, list[float]]:
    """(low, high) limits in log10 and the round ticks of a log axis showing every x > 0, with
    a margin either side; every tick lies inside the limits (a narrow sweep still gets ticks)."""
    lo, hi = math.log10(min(xs)), math.log10(max(xs))
    pad = max((hi - lo) * 0.08, 0.02)
    lo, hi = lo - pad, hi + pad
    return lo, hi, [t for t in log_ticks(10 ** lo, 10 ** hi, most) if lo <= math.log10(t) <= hi]


def linear_ticks(low: float, high: float, most: int = 5) -> list[float]:
    """Round values (step 1, 2 or 5 x 10^k) covering ``low`` .. ``high``."""
    if not (math.isfinite(low) and math.isfinite(high)) or high <= low:
        return [round(low, 2)] if math.isfinite(low) else []
    raw = (high - low) / max(1, most - 1)
    base = 10.0 ** math.floor(math.log10(raw))
    step = next(m * base for m in (1, 2, 5, 10) if m * base >= raw)
    first = math.ceil(low / step - 1e-9) * step
    ticks = []
    value = first
    while value <= high + 1e-9 * step:
        ticks.append(round(value, 10))
        value += step
    return ticks


def tick_label(value: float) -> str:
    """``1200000`` -> ``1.2M``, ``6.5`` -> ``6.5``."""
    return count(value) if abs(value) >= 1000 else f"{value:g}"


def headroom(ys: Sequence[float], legend_rows: int, plot_rows: int) -> tuple[float, float]:
    """y limits that leave the top ``legend_rows`` rows of a ``plot_rows``-row plot free, so the
    legend (drawn top-left) never hides a point."""
    low, high = min(ys), max(ys)
    span = high - low or max(abs(high) * 0.1, 1.0)
    low -= 0.05 * span
    usable = max(2, plot_rows - legend_rows - 1)
    high += span * (legend_rows + 1) / usable
    return low, high
