"""Measured speed of a whole deployable network beside the dense network of the same preset.

Declared parameters and mult-adds do not predict speed (research notes 001: ACDC 70x slower
than the dense layer it replaced at a fraction of its mult-adds; Ma et al. 2018, ShuffleNet V2:
"use the direct metric"). :func:`bench_model` times both networks in one interleaved measurement
per (threads, batch) group and mode, so background load hits them alike and the ratio holds:

- ``eager``: the eval-mode module under ``torch.inference_mode`` (caches warm after the warm-up);
- ``compile``: ``torch.compile`` of it (compiled in the warm-up, not timed);
- ``onnx``: its ONNX file in ONNX Runtime (:mod:`lowrank.deploy.export`; the session's constant
  folding builds the structured weights once at load, as the eval cache does).

Figures per call of a batch (median over interleaved rounds, IQR as spread), per image (call /
batch) and throughput (images/s); the time ratio's spread is the IQR of the per-round ratios.
:func:`time_by_module` says where the eager time goes by module depth (the grouping of
``lowrank count``): forward hooks around each group, synchronised on CUDA.

Latency is a measurement, not a property of a config: every result carries the device name,
thread count, dtype and versions that produced it (:func:`environment`), and results are compared
only with their own kind (:func:`lowrank.deploy.records.device_key`).
"""

from __future__ import annotations

import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn as nn

from ..errors import UserError
from .deployable import Deployable
from .timing import Timing, summarise, sync, time_round_robin, torch_threads

MODES = ("eager", "compile", "onnx")
MIN_SECONDS = 2.0  # per (threads, batch) group: cheap settings get more rounds (steadier medians)
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def usable_cores() -> int:
    """Cores this process may run on (affinity and cgroup-pinned sets respected)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def cpu_name() -> str:
    """The CPU's model name (/proc/cpuinfo), else what the platform reports."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if line.lower().startswith("model name"):
                    return " ".join(line.split(":", 1)[1].split())
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def device_name(device: torch.device) -> str:
    """``cpu: <model name>`` or ``cuda: <GPU name>``: what a latency was measured on."""
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    return f"cpu: {cpu_name()}"


def environment(device: torch.device, dtype: torch.dtype, modes: list[str] | tuple[str, ...] = ("eager",)) -> dict[str, Any]:
    """What produced a measurement: device, its name, dtype, torch (and ONNX Runtime) versions."""
    from ..train.allocator import tune_cpu_allocator

    facts = {"device": device.type, "device_name": device_name(device), "dtype": str(dtype).replace("torch.", ""),
             "torch": torch.__version__, "cores": usable_cores(), "host": platform.node(),
             **tune_cpu_allocator()}  # the worker's malloc settings (applied once per process; recorded)
    if "onnx" in modes:
        import onnxruntime

        facts["onnxruntime"] = onnxruntime.__version__
    return facts


def parse_threads(text: str) -> list[int]:
    """``1,all`` -> [1, usable cores]; positive integers and ``all``; ValueError on anything else."""
    values = []
    for part in (piece.strip() for piece in str(text).split(",")):
        if not part:
            continue
        if part == "all":
            values.append(usable_cores())
            continue
        value = int(part)  # ValueError for text
        if value < 1:
            raise ValueError(part)
        values.append(value)
    if not values:
        raise ValueError(text)
    return list(dict.fromkeys(values))


# ---------------------------------------------------------------- runners


class Runners:
    """One callable per (network, mode, threads, batch): the compiled module and the ONNX sessions
    are made once and reused; everything the ONNX mode writes lives in a temporary directory."""

    def __init__(self, networks: list[Deployable], dtype: torch.dtype, workdir: Path) -> None:
        self.networks, self.dtype, self.workdir = networks, dtype, workdir
        self._models = {id(net): _cast(net.model, dtype) for net in networks}
        self._compiled: dict[int, nn.Module] = {}
        self._onnx_files: dict[int, Path] = {}
        self._sessions: dict[tuple[int, int], Any] = {}

    def model(self, net: Deployable) -> nn.Module:
        return self._models[id(net)]

    def get(self, net: Deployable, mode: str, threads: int, images: torch.Tensor) -> Callable[[], None]:
        """The timed call of ``net`` in ``mode`` on ``images``."""
        if mode == "eager":
            model = self.model(net)
            return _inference(model, images)
        if mode == "compile":
            if id(net) not in self._compiled:
                self._compiled[id(net)] = torch.compile(self.model(net))
            return _inference(self._compiled[id(net)], images)
        if mode == "onnx":
            from .export import onnx_session, prepared, trace, write_onnx

            if id(net) not in self._onnx_files:
                path = self.workdir / f"{len(self._onnx_files)}.onnx"
                model = prepared(net.model)
                example = net.example(2)
                write_onnx(model, trace(model, example, "onnx"), example, path)
                self._onnx_files[id(net)] = path
            key = (id(net), threads)
            if key not in self._sessions:
                self._sessions[key] = onnx_session(self._onnx_files[id(net)], threads, images.device)
            session = self._sessions[key]
            feed = {session.get_inputs()[0].name: images.detach().cpu().numpy()}
            return lambda: session.run(None, feed)
        raise ValueError(f"unknown mode {mode!r}")


def _cast(model: nn.Module, dtype: torch.dtype) -> nn.Module:
    if dtype == torch.float32:
        return model
    import copy

    return copy.deepcopy(model).to(dtype)


def _inference(model: nn.Module, images: torch.Tensor) -> Callable[[], None]:
    def run() -> None:
        with torch.inference_mode():
            model(images)
    return run


# ---------------------------------------------------------------- measurement


def _ratio_spread(subject: list[float], reference: list[float]) -> tuple[float, float]:
    """Median and IQR of the per-round ratios subject / reference (rounds are interleaved)."""
    ratios = [s / r for s, r in zip(subject, reference) if r > 0]
    timing = summarise(ratios)
    return timing.median_ms, timing.iqr_ms


def check_request(device: str, modes: list[str], dtype: str) -> None:
    """Refuse what cannot be measured here, before anything is built (one UserError)."""
    for mode in modes:
        if mode not in MODES:
            raise UserError(f"unknown mode {mode!r}", key="--mode", hint=f"one of: {', '.join(MODES)}")
    if dtype not in DTYPES:
        raise UserError(f"unknown dtype {dtype!r}", key="--dtype", hint=f"one of: {', '.join(DTYPES)}")
    if device not in ("cpu", "cuda"):
        raise UserError(f"unknown device {device!r}", key="--device", hint="cpu or cuda")
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is available here", key="--device", hint="use --device cpu")
    if "onnx" in modes:
        from .export import require_format

        require_format("onnx", key="--mode onnx")
        if dtype != "float32":
            raise UserError(f"--mode onnx times float32 files, not {dtype}", key="--dtype",
                            hint="drop onnx from --mode, or use --dtype float32")


def time_networks(networks: list[Deployable], *, threads: list[int], batches: list[int], modes: list[str],
                  repeat: int = 5, dtype: str = "float32", runners: Runners | None = None,
                  progress: Callable[[str], None] | None = None, min_seconds: float = MIN_SECONDS) -> list[dict[str, Any]]:
    """Every (network, mode) timed in one interleaved round robin per (threads, batch): each round calls
    each of them once, so the ratios between any two rows of a group share the same background load.
    At least ``repeat`` rounds, more while they fit in ``min_seconds`` per group. One row per
    (threads, batch, mode, network index) with its :class:`Timing`."""
    from ..train.allocator import tune_cpu_allocator

    tune_cpu_allocator()  # as in the worker: freed activations stay in the heap (lowrank.train.allocator)
    torch_dtype = DTYPES[dtype]
    device = networks[0].device
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="lowrank-bench-") as workdir:
        runners = runners or Runners(networks, torch_dtype, Path(workdir))
        for thread_count in threads:
            with torch_threads(thread_count):
                for batch in batches:
                    images = networks[0].example(batch, torch_dtype)
                    keys = [(mode, index) for mode in modes for index in range(len(networks))]
                    fns = [runners.get(networks[index], mode, thread_count, images) for mode, index in keys]
                    timings = time_round_robin(fns, device, repeat, warmup=2, min_seconds=min_seconds)
                    for (mode, index), timing in zip(keys, timings):
                        rows.append({"threads": thread_count, "batch": batch, "mode": mode, "network": index,
                                     "timing": timing})
                    if progress:
                        progress(f"{thread_count} threads, batch {batch}")
    return rows


def ratio_row(row: dict[str, Any], reference: dict[str, Any]) -> dict[str, Any]:
    """A timed row against the reference row of its group: ms, per image, throughput, and the median
    and IQR of the per-round time ratios."""
    subject, dense, batch = row["timing"], reference["timing"], row["batch"]
    ratio, ratio_iqr = _ratio_spread(list(subject.times_ms), list(dense.times_ms))
    return {"threads": row["threads"], "batch": batch, "mode": row["mode"],
            "ms": subject.median_ms, "iqr_ms": subject.iqr_ms, "dense_ms": dense.median_ms,
            "dense_iqr_ms": dense.iqr_ms, "per_image_ms": subject.median_ms / batch,
            "dense_per_image_ms": dense.median_ms / batch,
            "throughput": 1e3 * batch / subject.median_ms if subject.median_ms > 0 else None,
            "dense_throughput": 1e3 * batch / dense.median_ms if dense.median_ms > 0 else None,
            "ratio": ratio, "ratio_iqr": ratio_iqr, "rounds": subject.rounds}


def bench_model(subject: Deployable, reference: Deployable, *, threads: list[int], batches: list[int],
                modes: list[str], repeat: int = 5, depth: int = 2, dtype: str = "float32",
                progress: Callable[[str], None] | None = None, min_seconds: float = MIN_SECONDS) -> dict[str, Any]:
    """Time ``subject`` against ``reference`` (the dense network) per (threads, batch, mode), and
    where the eager time goes by module depth; returns everything as one JSON-able dict."""
    torch_dtype = DTYPES[dtype]
    with tempfile.TemporaryDirectory(prefix="lowrank-bench-") as workdir:
        runners = Runners([reference, subject], torch_dtype, Path(workdir))
        timed = time_networks([reference, subject], threads=threads, batches=batches, modes=modes, repeat=repeat,
                              dtype=dtype, runners=runners, progress=progress, min_seconds=min_seconds)
        by_key = {(row["threads"], row["batch"], row["mode"], row["network"]): row for row in timed}
        rows = [ratio_row(row, by_key[(row["threads"], row["batch"], row["mode"], 0)])
                for row in timed if row["network"] == 1]
        with torch_threads(threads[0]):
            breakdown = breakdown_table(subject, reference, runners, batches[0], depth, repeat)
        if progress:
            progress("breakdown")
    return {
        "environment": {**environment(subject.device, torch_dtype, modes), "threads": threads, "batches": batches,
                        "modes": modes, "repeat": repeat, "min_seconds": min_seconds},
        "subject": subject.summary(), "reference": reference.summary(),
        "declared": {"params_ratio": subject.params / reference.params,
                     "macs_ratio": subject.macs / reference.macs if reference.macs else None},
        "rows": rows, "breakdown": breakdown,
    }


# ---------------------------------------------------------------- where the time goes


def depth_groups(layers: list[dict[str, Any]], depth: int) -> dict[str, dict[str, int]]:
    """Counted layers grouped by the first ``depth`` parts of their names (``lowrank count``'s
    summary): name -> params, macs, in order of first appearance."""
    groups: dict[str, dict[str, int]] = {}
    for row in layers:
        key = ".".join(str(row.get("name")).split(".")[:depth])
        group = groups.setdefault(key, {"params": 0, "macs": 0})
        group["params"] += int(row.get("params") or 0)
        group["macs"] += int(row.get("macs") or 0)
    return groups


def time_by_module(model: nn.Module, images: torch.Tensor, names: list[str], repeat: int) -> tuple[dict[str, float], float]:
    """Mean ms per forward spent inside each named module (hooks around it; a name inside another
    named one is left to the outer), and the whole forward's mean ms."""
    modules = dict(model.named_modules())
    chosen = [name for name in names if name in modules and name != "(root)"]
    outer = [name for name in chosen if not any(name.startswith(other + ".") for other in chosen if other != name)]
    device = images.device
    spent = {name: 0.0 for name in outer}
    started: dict[str, list[float]] = {name: [] for name in outer}
    handles = []
    for name in outer:
        def before(_module, _inputs, name=name):
            sync(device)
            started[name].append(time.perf_counter())

        def after(_module, _inputs, _output, name=name):
            sync(device)
            spent[name] += time.perf_counter() - started[name].pop()

        handles.append(modules[name].register_forward_pre_hook(before))
        handles.append(modules[name].register_forward_hook(after))
    try:
        with torch.inference_mode():
            model(images)  # warm: caches, allocator
            for name in spent:
                spent[name] = 0.0
            total = 0.0
            for _ in range(max(1, repeat)):
                sync(device)
                start = time.perf_counter()
                model(images)
                sync(device)
                total += time.perf_counter() - start
    finally:
        for handle in handles:
            handle.remove()
    count = max(1, repeat)
    return {name: 1e3 * value / count for name, value in spent.items()}, 1e3 * total / count


def breakdown_table(subject: Deployable, reference: Deployable, runners: Runners, batch: int, depth: int,
                    repeat: int) -> dict[str, Any]:
    """Per module-depth group: params, mult-adds and eager ms of both networks at ``batch``."""
    groups = depth_groups(subject.layers, depth)
    dense_groups = depth_groups(reference.layers, depth)
    names = list(dict.fromkeys([*dense_groups, *groups]))
    images = subject.example(batch, runners.dtype)
    spent, total = time_by_module(runners.model(subject), images, names, repeat)
    dense_spent, dense_total = time_by_module(runners.model(reference), images, names, repeat)
    rows = []
    for name in names:
        mine, dense = groups.get(name, {}), dense_groups.get(name, {})
        rows.append({"name": name, "params": mine.get("params", 0), "dense_params": dense.get("params", 0),
                     "macs": mine.get("macs", 0), "dense_macs": dense.get("macs", 0),
                     "ms": spent.get(name), "dense_ms": dense_spent.get(name)})
    outside = total - sum(value for value in spent.values())
    dense_outside = dense_total - sum(value for value in dense_spent.values())
    rows.append({"name": "(outside these modules)", "params": 0, "dense_params": 0, "macs": 0, "dense_macs": 0,
                 "ms": max(0.0, outside), "dense_ms": max(0.0, dense_outside)})
    return {"depth": depth, "batch": batch, "mode": "eager", "threads": torch.get_num_threads(),
            "total_ms": total, "dense_total_ms": dense_total, "rows": rows}


# ---------------------------------------------------------------- one network (bench.after_run)


def measure(net: Deployable, batches: list[int], repeat: int = 5, threads: int | None = None) -> dict[str, Any]:
    """Eager latency of ``net`` alone at each batch, on its device with the process's (or ``threads``)
    thread count: what ``bench.after_run`` records with a run's results."""
    thread_count = threads or torch.get_num_threads()
    with torch_threads(thread_count):
        fns = [_inference(net.model, net.example(batch)) for batch in batches]
        timings = time_round_robin(fns, net.device, repeat, warmup=2)
    facts = environment(net.device, torch.float32)
    return {**facts, "threads": thread_count, "mode": "eager", "repeat": repeat,
            "batches": [{"batch": batch, "ms": t.median_ms, "iqr_ms": t.iqr_ms,
                         "throughput": 1e3 * batch / t.median_ms if t.median_ms > 0 else None}
                        for batch, t in zip(batches, timings)]}

