"""Interleaved wall-clock timing: the one timer of every benchmark (layers and whole networks).

Each candidate is timed with :class:`torch.utils.benchmark.Timer` (which synchronises CUDA and
fixes the thread count) in ``repeat`` interleaved rounds after a warm-up, so background load hits
all candidates of one comparison alike; the figure is the median over rounds, with the
interquartile range as its spread. Ratios between candidates of one call are the meaningful
figures on a shared machine; absolute times move with the load.
"""

from __future__ import annotations

import contextlib
import logging
import statistics
import time
from dataclasses import dataclass
from typing import Callable, Iterator

import torch

logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)  # "no CUDA runtime" on import
from torch.utils import benchmark  # noqa: E402


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA), so a clock read means the work is done."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass(frozen=True)
class Timing:
    """Per-call wall time of one candidate over the interleaved rounds (milliseconds)."""

    median_ms: float
    iqr_ms: float  # interquartile range over rounds (0 with fewer than 2 rounds)
    rounds: int
    times_ms: tuple[float, ...] = ()  # per-call time of each round, in round order


BLOCK_SECONDS = 0.02  # each round times enough calls to fill about this long (timer resolution, noise)
SLOW_CALL_SECONDS = 0.25  # a warm-up call longer than this ends the warm-up


def time_round_robin(fns: list[Callable[[], None]], device: torch.device, repeat: int,
                     block_seconds: float = BLOCK_SECONDS, warmup: int = 1, min_seconds: float = 0.0,
                     max_rounds: int = 200) -> list[Timing]:
    """Median and spread of each function's per-call time, timed in interleaved rounds after a warm-up.

    A round calls every candidate ``number`` times under ``torch.utils.benchmark.Timer``
    (``number`` sized from the warm-up so a round lasts about ``block_seconds``). Interleaving
    puts every candidate under the same background load (a shared box), so the ratios between
    candidates of one run stay meaningful even when the absolute figures move. At least
    ``repeat`` rounds, more (up to ``max_rounds``) while they fit in ``min_seconds``: cheap
    settings get many rounds for the price of a few expensive ones.
    """
    numbers, sized = [], []
    for fn in fns:
        for index in range(max(1, warmup)):
            start = time.perf_counter()
            fn()  # first calls: lazy init, allocator, kernels, caches, compilation
            sync(device)
            if time.perf_counter() - start > SLOW_CALL_SECONDS:
                break  # a call this long is warm after one (a WRN at batch 64 on a CPU: seconds each)
        start = time.perf_counter()
        fn()
        sync(device)
        once = max(time.perf_counter() - start, 1e-6)
        numbers.append(max(1, min(1000, int(block_seconds / once))))
        sized.append(once * numbers[-1])
    rounds = max(1, repeat)
    if min_seconds > 0:
        rounds = max(rounds, min(max_rounds, int(min_seconds / max(sum(sized), 1e-6))))
    timers = [benchmark.Timer(stmt="fn()", globals={"fn": fn}, num_threads=torch.get_num_threads()) for fn in fns]
    per_call: list[list[float]] = [[] for _ in fns]
    for _ in range(rounds):
        for i, (timer, number) in enumerate(zip(timers, numbers)):
            per_call[i].append(timer.timeit(number).mean * 1e3)
    return [summarise(times) for times in per_call]


def summarise(times_ms: list[float]) -> Timing:
    """Median and interquartile range of per-call times (ms)."""
    quartiles = statistics.quantiles(times_ms, n=4) if len(times_ms) >= 2 else [times_ms[0]] * 3
    return Timing(statistics.median(times_ms), quartiles[2] - quartiles[0], len(times_ms), tuple(times_ms))


@contextlib.contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """torch's intra-op thread count set to ``count`` inside, restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)
