"""Layer benchmark (``lowrank bench layers``): wall time of every substitute method relative to the dense conv it replaces.

Each registered method (at its default hyperparameter) replaces a k x k, stride-1 conv with
C -> C channels on a B x C x H x W input; forward (under ``no_grad``) and forward+backward are
timed in the same run as the dense conv and reported as ratios to it (plus absolute ms).
:func:`bench_acdc_linear` compares stacked ACDC with ``nn.Linear`` at N = 4096 on both forward
paths (the research notes measured ACDC 70x slower than Linear with their DCT, Oct 2018).
Each candidate is timed by :func:`lowrank.deploy.timing.time_round_robin` (interleaved rounds
after a warm-up, median and interquartile range), as the whole networks of ``lowrank bench
model`` are.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn

from ..methods import ConvSpec, get_method, list_methods
from .timing import time_round_robin


def _forward(module: nn.Module, x: torch.Tensor) -> Callable[[], None]:
    def run() -> None:
        with torch.no_grad():
            module(x)
    return run


def _forward_backward(module: nn.Module, x: torch.Tensor) -> Callable[[], None]:
    def run() -> None:
        module.zero_grad(set_to_none=True)
        module(x).sum().backward()
    return run


def _timed_rows(rows: list[dict], modules: list[nn.Module], x: torch.Tensor, repeat: int,
                progress: Callable[[str], None] | None = None) -> list[dict]:
    """Fill fwd/fwd+bwd median ms, their IQR and the ratios to the first row into ``rows``.

    With the worker's malloc settings (:mod:`lowrank.train.allocator`, as ``bench model``): with
    glibc's defaults each 2 MB intermediate of an FFT layer is mmapped and page-faulted in on every
    call, which doubled the ACDC fast path at N = 4096 (2.0 ms against 0.9 ms) and timed the
    kernel's page faults, not the layer."""
    from ..train.allocator import tune_cpu_allocator

    malloc = tune_cpu_allocator()["malloc"]
    fwd = time_round_robin([_forward(m, x) for m in modules], x.device, repeat)
    if progress:
        progress("fwd")
    fwd_bwd = time_round_robin([_forward_backward(m, x) for m in modules], x.device, repeat)
    if progress:
        progress("fwd+bwd")
    for row, module, f, fb in zip(rows, modules, fwd, fwd_bwd):
        row.update(params=sum(p.numel() for p in module.parameters()), fwd_ms=f.median_ms, fwd_iqr_ms=f.iqr_ms,
                   fwdbwd_ms=fb.median_ms, fwdbwd_iqr_ms=fb.iqr_ms, rounds=f.rounds,
                   fwd_ratio=f.median_ms / fwd[0].median_ms, fwdbwd_ratio=fb.median_ms / fwd_bwd[0].median_ms,
                   malloc=malloc)
    return rows


def bench_layers(channels: list[int], batches: list[int], device: str = "cpu", hw: int = 16,
                 kernel: int = 3, repeat: int = 5, methods: list[str] | None = None,
                 progress: Callable[[str], None] | None = None) -> list[dict]:
    """One row per (channels, batch, method): params, ms and ratio to the dense conv of the same run.

    ``progress`` is called after each timed pass (two per (channels, batch) group).
    """
    dev = torch.device(device)
    names = methods or [m.name for m in list_methods()]
    names = ["dense"] + [n for n in names if n != "dense"]  # dense first: the reference for the ratios
    rows: list[dict] = []
    for ch in channels:
        spec = ConvSpec(ch, ch, (kernel, kernel), (1, 1), (kernel // 2, kernel // 2))
        for batch in batches:
            x = torch.randn(batch, ch, hw, hw, device=dev)
            group, modules = [], []
            for name in names:
                method = get_method(name)
                hp = method.hp.default if method.hp is not None else None
                row = {"kind": "conv", "method": name, "hp": hp, "channels": ch, "batch": batch, "hw": hw,
                       "kernel": kernel, "device": str(dev)}
                try:
                    module = method.build(spec, hp).to(dev)
                    module(x[:1]).sum().backward()
                except Exception as error:  # one broken method must not hide the others' figures
                    rows.append({**row, "error": f"{type(error).__name__}: {error}"})
                    continue
                group.append(row)
                modules.append(module)
            rows += _timed_rows(group, modules, x, repeat, progress)
    return rows


def bench_acdc_linear(n: int = 4096, batch: int = 128, layers: tuple[int, ...] = (1, 12),
                      collapse_layers: tuple[int, ...] = (1,), device: str = "cpu", repeat: int = 5,
                      progress: Callable[[str], None] | None = None) -> list[dict]:
    """nn.Linear(n, n) vs StackedACDCLinear(n, n, L): the fast path for each L in ``layers``, the
    collapse path for each L in ``collapse_layers`` (building an n x n matrix per call is slow at
    n = 4096, which is why ``path='auto'`` avoids it there); ratios to the Linear."""
    from lowrank.methods.acdc import StackedACDCLinear

    dev = torch.device(device)
    x = torch.randn(batch, n, device=dev)
    candidates: list[tuple[str, nn.Module]] = [("linear", nn.Linear(n, n))]
    for count in layers:
        candidates.append((f"acdc L={count} fast", StackedACDCLinear(n, n, count, path="fast")))
    for count in collapse_layers:
        candidates.append((f"acdc L={count} collapse", StackedACDCLinear(n, n, count, path="collapse")))
    rows = [{"kind": "linear", "method": name, "n": n, "batch": batch, "device": str(dev)} for name, _ in candidates]
    return _timed_rows(rows, [module.to(dev) for _, module in candidates], x, repeat, progress)
