"""Learning-rate schedules as a multiplier of the base lr at a fractional epoch.

Evaluated every step (``LambdaLR`` stepped per iteration), so piecewise-linear and
cosine schedules are smooth within an epoch and the scheduler state checkpoints exactly.
"""

from __future__ import annotations

import bisect
import math
from typing import Callable

from .config import ScheduleConfig
from .registry import Registry

ScheduleFn = Callable[[ScheduleConfig, float, float], float]
_SCHEDULES: Registry[ScheduleFn] = Registry("schedule")


def schedule(name: str) -> Callable[[ScheduleFn], ScheduleFn]:
    """Register a schedule ``f(config, t, total_epochs) -> multiplier``."""
    return _SCHEDULES.register(name)


@schedule("constant")
def _constant(config: ScheduleConfig, t: float, total: float) -> float:
    return 1.0


@schedule("cosine")
def _cosine(config: ScheduleConfig, t: float, total: float) -> float:
    # SGDR without restarts (Loshchilov & Hutter 2017), annealed over the whole run.
    progress = min(max(t / total, 0.0), 1.0)
    floor = config.min_lr_ratio
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


@schedule("multistep")
def _multistep(config: ScheduleConfig, t: float, total: float) -> float:
    # milestones are epoch boundaries: the decay applies from the start of epoch `m`.
    return config.gamma ** bisect.bisect_right(config.milestones, t)


@schedule("piecewise")
def _piecewise(config: ScheduleConfig, t: float, total: float) -> float:
    knots, values = config.epochs, config.values
    if t <= knots[0]:
        return values[0]
    if t >= knots[-1]:
        return values[-1]
    i = bisect.bisect_right(knots, t) - 1
    span = knots[i + 1] - knots[i]
    frac = (t - knots[i]) / span if span else 1.0
    return values[i] + frac * (values[i + 1] - values[i])


def lr_multiplier(config: ScheduleConfig, t: float, total_epochs: float) -> float:
    """The multiplier of the base lr at fractional epoch ``t`` (warmup applied first)."""
    value = _SCHEDULES.get(config.name)(config, t, total_epochs)
    if config.warmup_epochs and t < config.warmup_epochs:
        value *= t / config.warmup_epochs
    return value
