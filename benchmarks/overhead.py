"""What the training harness costs: ``lowrank``'s worker vs a bare PyTorch loop doing the same work.

    python benchmarks/overhead.py                         # quickstart (CPU) and synthetic ResNet-9
    python benchmarks/overhead.py --case quickstart --pairs 8
    python benchmarks/overhead.py --case quickstart --calibrate   # bare vs bare: the method's noise floor
    python benchmarks/overhead.py --case resnet9 --set train.device=cuda --set train.epochs=3

Both sides build the same model (``build_network``: substitution, budget, counts), the same
datasets and DataLoaders, the same optimiser groups and lr schedule, train the same epochs
with the same per-epoch validation and the final test. The bare loop does nothing else;
the harness is the real worker (``lowrank.train.main`` on a fresh run directory: metrics,
status, checkpoints, best.pt, results row). Each is timed from its start to the final test.

Interleaved (the default): each pair runs both sides at once in two threads that take turns
epoch by epoch (a baton passed where the harness writes its ``epoch`` line and at the same point
of the bare loop), so a slow stretch of a shared machine falls on both sides, not on whichever
ran then; each side's time is the sum of its own turns, and at each hand-over the global RNGs are
swapped so that each side draws exactly what it would alone (both reach the same test error).
``--sequential`` runs whole runs one after the other instead, in ABBA order; ``--calibrate``
times the bare loop against itself (the spread this machine gives a zero overhead). Both sides
run under the worker's malloc settings (lowrank.train.allocator), set before the warm-up: without
them identical runs differed by up to +-10 % on glibc, by what the process had freed before.
The report is the median of the per-pair ratios harness / bare with their min and max.
Target (issue 12): ratio <= 1.02.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

REPO = Path(__file__).resolve().parents[1]

# case -> (preset, overrides). ResNet-9 is the DAWNBench protocol on synthetic CIFAR-shaped
# data; on a CPU it is narrowed (width 16) and short, on a GPU pass --set to widen it.
CASES: dict[str, tuple[str, list[str]]] = {
    "quickstart": ("quickstart.yaml", ["train.device=cpu"]),  # the preset as shipped: 30 epochs
    "resnet9": ("resnet9_dawn.yaml", [
        "data.name=synthetic", "data.workers=0", "data.batch_size=64",
        "data.kwargs={num_train: 1024, num_val: 256, num_test: 256, image_size: 32, channels: 3}",
        "model.kwargs={width: 16}", "train.epochs=2", "train.device=cpu",
        "train.schedule={name: piecewise, epochs: [0, 1, 2], values: [0, 1, 0]}", "log.step_every=5"]),
}


def bare_run(config: Any, after_epoch_steps: Any = None) -> dict[str, float]:
    """The same work as the worker with nothing around it; returns seconds and the test error.

    ``after_epoch_steps()`` is called where the worker writes its epoch line (after the
    epoch's training steps, before its validation): the interleaved mode's hand-over point."""
    import torch
    import torch.nn.functional as F
    from torch.utils.data import DataLoader

    from lowrank.amp import Precision
    from lowrank.build import build_network
    from lowrank.data import build_datasets
    from lowrank.protocol import make_optimizer, plan_phases
    from lowrank.schedule import lr_multiplier
    from lowrank.train.checkpoint import seed_everything
    from lowrank.train.device import resolve_device

    start = time.perf_counter()
    train_cfg = config.train
    device = resolve_device(train_cfg.device)
    seed_everything(train_cfg.seed, train_cfg.deterministic)
    data = build_datasets(config.data)
    pin = config.data.pin_memory and device.type == "cuda"
    generator = torch.Generator()
    train_loader = DataLoader(data.train, batch_size=config.data.batch_size, shuffle=True,
                              num_workers=config.data.workers, pin_memory=pin, generator=generator)
    eval_bs = config.data.eval_batch_size or config.data.batch_size
    val_loader = DataLoader(data.val, batch_size=eval_bs, num_workers=config.data.workers, pin_memory=pin)
    test_loader = DataLoader(data.test, batch_size=eval_bs, num_workers=config.data.workers, pin_memory=pin)
    model = build_network(config, data.num_classes, data.input_shape, device=device).model
    channels_last = train_cfg.channels_last and device.type == "cuda"
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    autocast = Precision(train_cfg.amp, device).autocast  # the same precision as the worker's
    steps = len(train_loader)

    def to_device(images: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        images, targets = images.to(device, non_blocking=True), targets.to(device, non_blocking=True)
        if channels_last and images.dim() == 4:
            images = images.contiguous(memory_format=torch.channels_last)
        return images, targets

    def evaluate(loader: DataLoader) -> float:
        model.eval()
        wrong = total = 0
        with torch.no_grad():
            for images, targets in loader:
                images, targets = to_device(images, targets)
                with autocast():
                    logits = model(images)
                wrong += int((logits.argmax(1) != targets).sum())
                total += len(targets)
        return 100.0 * wrong / total

    for phase in plan_phases(config):
        optimizer = make_optimizer(config, phase, model, [])
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step, p=phase: lr_multiplier(p.schedule, step / steps, p.epochs))
        for epoch in range(phase.start, phase.end):
            model.train()
            generator.manual_seed(train_cfg.seed * 1_000_003 + epoch)
            for images, targets in train_loader:
                images, targets = to_device(images, targets)
                with autocast():
                    logits = model(images)
                loss = F.cross_entropy(logits.float(), targets, label_smoothing=train_cfg.label_smoothing)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
            if after_epoch_steps is not None:
                after_epoch_steps()
            if (epoch + 1) % config.log.eval_every == 0 or epoch + 1 == train_cfg.epochs:
                evaluate(val_loader)
    err = evaluate(test_loader)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return {"seconds": time.perf_counter() - start, "test_err1": err}


def harness_run(config: Any, home: Path, after_epoch_steps: Any = None) -> dict[str, float]:
    """The real worker on a fresh run directory; returns seconds and the test error.

    ``after_epoch_steps()`` is called right after the worker appends each ``epoch`` line."""
    from lowrank.rundir import RunDir
    from lowrank.train import main

    run = RunDir.create(config.to_dict(), home=home)
    append = RunDir.append_metric
    if after_epoch_steps is not None:  # only the worker appends metrics while this runs

        def append_then_hand_over(self: RunDir, record: dict[str, Any], sync: bool | None = None) -> None:
            append(self, record, sync)
            if record.get("event") == "epoch":
                after_epoch_steps()

        RunDir.append_metric = append_then_hand_over
    try:
        start = time.perf_counter()
        code = main([str(run.path)])
        seconds = time.perf_counter() - start
    finally:
        RunDir.append_metric = append
    status = run.read_status()
    if code != 0:
        raise SystemExit(f"the worker failed ({code}): {status.get('error')}")
    return {"seconds": seconds, "test_err1": status["test_err1"]}


class Baton:
    """Two sides in two threads take turns; each side's time is the sum of its own turns.

    At each hand-over the global RNG states (python, numpy, torch, CUDA: the worker's own
    ``rng_state``) of the side that stops are saved and those of the side that starts restored,
    so each side draws the numbers it would draw alone; both start from ``start_rng``. On CUDA a
    side's turn ends after a synchronize (its queued work is its own).
    """

    def __init__(self, sides: tuple[str, str], cuda: bool, start_rng: dict[str, Any]) -> None:
        self.sides, self.cuda = sides, cuda
        self.holder = sides[0]
        self.done: set[str] = set()
        self.active = {side: 0.0 for side in sides}
        self.rng = {side: start_rng for side in sides}
        self.since = 0.0
        self.turn_seconds: dict[str, list[float]] = {side: [] for side in sides}
        self.condition = threading.Condition()

    def _other(self, side: str) -> str:
        return self.sides[1] if side == self.sides[0] else self.sides[0]

    def _stop_clock(self, side: str) -> None:
        import torch

        from lowrank.train.checkpoint import rng_state

        if self.cuda:
            torch.cuda.synchronize()
        seconds = time.perf_counter() - self.since
        self.active[side] += seconds
        self.turn_seconds[side].append(seconds)
        self.rng[side] = rng_state()

    def _start_clock(self, side: str) -> None:
        from lowrank.train.checkpoint import set_rng_state

        set_rng_state(self.rng[side])
        self.since = time.perf_counter()

    def begin(self, side: str) -> None:
        """Wait for the first turn of ``side``."""
        with self.condition:
            self.condition.wait_for(lambda: self.holder == side)
            self._start_clock(side)

    def hand_over(self, side: str) -> None:
        """End this turn; the other side runs (unless it has finished) until it hands back."""
        with self.condition:
            other = self._other(side)
            if other in self.done:
                return  # nothing to take turns with: keep the clock running
            self._stop_clock(side)
            self.holder = other
            self.condition.notify_all()
            self.condition.wait_for(lambda: self.holder == side)
            self._start_clock(side)

    def end(self, side: str) -> None:
        """This side has finished: its last turn ends and the other side runs to its end."""
        with self.condition:
            self._stop_clock(side)
            self.done.add(side)
            self.holder = self._other(side)
            self.condition.notify_all()


def interleaved_pair(config: Any, home: Path, calibrate: bool = False, harness_first: bool = False) -> dict[str, Any]:
    """The bare loop and the harness (or, calibrating, a second bare loop) taking epoch turns.

    Both sides run in fresh threads of their own, alike (a side in the main thread ran ~5 %
    slower or faster than one in a thread, whichever it was: per-thread malloc arenas and
    OpenMP teams); the worker's signal handlers, which only the main thread may install, are
    not installed meanwhile (nothing signals it here). Both start from the same global RNG
    states, as two fresh processes would."""
    import signal

    from lowrank.train.checkpoint import rng_state
    from lowrank.train.device import resolve_device

    cuda = resolve_device(config.train.device).type == "cuda"
    names = ("bare", "bare_2" if calibrate else "harness")
    baton = Baton(names[::-1] if harness_first else names, cuda, rng_state())
    results: dict[str, Any] = {}
    errors: list[BaseException] = []

    def run_side(name: str) -> None:
        try:
            baton.begin(name)
            hand_over = lambda: baton.hand_over(name)  # noqa: E731
            results[name] = harness_run(config, home, hand_over) if name == "harness" else bare_run(config, hand_over)
        except BaseException as error:  # noqa: BLE001 -- raised below, once both sides have ended
            errors.append(error)
        finally:
            baton.end(name)

    install = signal.signal
    signal.signal = lambda signum, handler: signal.getsignal(signum)  # type: ignore[assignment]
    try:
        threads = [threading.Thread(target=run_side, args=(name,), daemon=True) for name in names]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        signal.signal = install  # type: ignore[assignment]
    if errors:
        raise errors[0]
    for name in names:
        # own turns only, waits excluded; turn_seconds shows where a difference lies
        results[name].update(seconds=baton.active[name], turns=len(baton.turn_seconds[name]),
                             turn_seconds=baton.turn_seconds[name])
    return results


def measure(case: str, overrides: list[str], pairs: int, home: Path, quiet: bool = False,
            sequential: bool = False, calibrate: bool = False) -> dict[str, Any]:
    """``pairs`` bare/harness pairs for one case (interleaved epoch turns, or whole runs in ABBA
    order with ``sequential``); ``calibrate`` compares the bare loop with itself. The ratio statistics."""
    import io
    import contextlib

    from lowrank.config import load
    from lowrank.train.allocator import tune_cpu_allocator

    preset, base = CASES[case]
    config = load(REPO / "presets" / preset, [*base, *overrides])
    tune_cpu_allocator()  # the worker's malloc settings, for both sides from the start (process-wide)
    bare_run(config)  # warm-up: first-touch costs (imports, allocator, thread pools) are no one's overhead
    other = "bare_2" if calibrate else "harness"
    rows = []
    for index in range(pairs):
        sink = io.StringIO()  # the worker prints a line per epoch; keep the report readable
        with contextlib.redirect_stdout(sink):
            if sequential:
                order = ("bare", other) if index % 2 == 0 else (other, "bare")
                row: dict[str, Any] = {}
                for side in order:
                    row[side] = bare_run(config) if side != "harness" else harness_run(config, home)
            else:
                row = interleaved_pair(config, home, calibrate, harness_first=index % 2 == 1)
        row["ratio"] = row[other]["seconds"] / row["bare"]["seconds"]
        rows.append(row)
        if not quiet:
            print(f"  {case} pair {index + 1}/{pairs}: bare {row['bare']['seconds']:.3f} s, "
                  f"{other} {row[other]['seconds']:.3f} s, ratio {row['ratio']:.4f}", flush=True)
    ratios = [row["ratio"] for row in rows]
    return {"case": case, "overrides": [*base, *overrides], "pairs": pairs,
            "mode": "sequential" if sequential else "interleaved", "compared": other,
            "ratio_median": statistics.median(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios),
            "bare_median_s": statistics.median(r["bare"]["seconds"] for r in rows),
            "harness_median_s": statistics.median(r[other]["seconds"] for r in rows),
            "same_test_err1": all(r["bare"]["test_err1"] == r[other]["test_err1"] for r in rows),
            "rows": rows}


def main(argv: list[str] | None = None) -> int:
    """Print harness/bare ratios with their spread; ``--json`` for the full record."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", action="append", choices=sorted(CASES), help="default: every case")
    parser.add_argument("--pairs", type=int, default=3, help="interleaved bare/harness pairs per case")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="KEY=VALUE for every case")
    parser.add_argument("--sequential", action="store_true",
                        help="whole runs one after the other (ABBA) instead of interleaved epoch turns")
    parser.add_argument("--calibrate", action="store_true",
                        help="bare loop against itself: the spread this machine gives a zero overhead")
    parser.add_argument("--json", action="store_true", help="print the full record as JSON")
    args = parser.parse_args(argv)
    home = Path(tempfile.mkdtemp(prefix="lowrank-overhead-"))
    os.environ["LOWRANK_HOME"] = str(home)
    reports = [measure(case, args.overrides, args.pairs, home, quiet=args.json, sequential=args.sequential,
                       calibrate=args.calibrate) for case in args.case or sorted(CASES)]
    if args.json:
        print(json.dumps(reports, indent=2))
        return 0
    for r in reports:
        print(f"{r['case']}: harness / bare = {r['ratio_median']:.4f} (median of {r['pairs']} pairs; "
              f"min {r['ratio_min']:.4f}, max {r['ratio_max']:.4f}); bare {r['bare_median_s']:.2f} s, "
              f"harness {r['harness_median_s']:.2f} s; overhead {100 * (r['ratio_median'] - 1):+.1f} %")
    return 0


if __name__ == "__main__":
    sys.exit(main())
