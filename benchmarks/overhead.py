"""What the training harness costs: ``lowrank``'s worker vs a bare PyTorch loop doing the same work.

    python benchmarks/overhead.py                         # quickstart (CPU) and synthetic ResNet-9
    python benchmarks/overhead.py --case quickstart --pairs 5
    python benchmarks/overhead.py --case resnet9 --set train.device=cuda --set train.epochs=3

Both sides build the same model (``build_network``: substitution, budget, counts), the same
datasets and DataLoaders, the same optimiser groups and lr schedule, train the same epochs
with the same per-epoch validation and the final test. The bare loop does nothing else;
the harness is the real worker (``lowrank.train.main`` on a fresh run directory: metrics,
status, checkpoints, best.pt, results row). Each is timed from its start to the final test.

The runs are interleaved in pairs, alternating which goes first (ABBA), so background
load on a shared machine hits both alike; the report is the median of the per-pair ratios
harness / bare with their min and max. Target (issue 12): ratio <= 1.02.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
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


def bare_run(config: Any) -> dict[str, float]:
    """The same work as the worker with nothing around it; returns seconds and the test error."""
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
            if (epoch + 1) % config.log.eval_every == 0 or epoch + 1 == train_cfg.epochs:
                evaluate(val_loader)
    err = evaluate(test_loader)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return {"seconds": time.perf_counter() - start, "test_err1": err}


def harness_run(config: Any, home: Path) -> dict[str, float]:
    """The real worker on a fresh run directory; returns seconds and the test error."""
    from lowrank.rundir import RunDir
    from lowrank.train import main

    run = RunDir.create(config.to_dict(), home=home)
    start = time.perf_counter()
    code = main([str(run.path)])
    seconds = time.perf_counter() - start
    status = run.read_status()
    if code != 0:
        raise SystemExit(f"the worker failed ({code}): {status.get('error')}")
    return {"seconds": seconds, "test_err1": status["test_err1"]}


def measure(case: str, overrides: list[str], pairs: int, home: Path, quiet: bool = False) -> dict[str, Any]:
    """Interleaved bare/harness pairs (ABBA order) for one case; the ratio statistics."""
    import io
    import contextlib

    from lowrank.config import load

    preset, base = CASES[case]
    config = load(REPO / "presets" / preset, [*base, *overrides])
    bare_run(config)  # warm-up: first-touch costs (imports, allocator, thread pools) are no one's overhead
    rows = []
    for index in range(pairs):
        order = ("bare", "harness") if index % 2 == 0 else ("harness", "bare")
        row: dict[str, Any] = {}
        for side in order:
            sink = io.StringIO()  # the worker prints a line per epoch; keep the report readable
            with contextlib.redirect_stdout(sink):
                row[side] = bare_run(config) if side == "bare" else harness_run(config, home)
        row["ratio"] = row["harness"]["seconds"] / row["bare"]["seconds"]
        rows.append(row)
        if not quiet:
            print(f"  {case} pair {index + 1}/{pairs}: bare {row['bare']['seconds']:.3f} s, "
                  f"harness {row['harness']['seconds']:.3f} s, ratio {row['ratio']:.4f}", flush=True)
    ratios = [row["ratio"] for row in rows]
    return {"case": case, "overrides": [*base, *overrides], "pairs": pairs,
            "ratio_median": statistics.median(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios),
            "bare_median_s": statistics.median(r["bare"]["seconds"] for r in rows),
            "harness_median_s": statistics.median(r["harness"]["seconds"] for r in rows),
            "same_test_err1": all(r["bare"]["test_err1"] == r["harness"]["test_err1"] for r in rows),
            "rows": rows}


def main(argv: list[str] | None = None) -> int:
    """Print harness/bare ratios with their spread; ``--json`` for the full record."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", action="append", choices=sorted(CASES), help="default: every case")
    parser.add_argument("--pairs", type=int, default=3, help="interleaved bare/harness pairs per case")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="KEY=VALUE for every case")
    parser.add_argument("--json", action="store_true", help="print the full record as JSON")
    args = parser.parse_args(argv)
    home = Path(tempfile.mkdtemp(prefix="lowrank-overhead-"))
    os.environ["LOWRANK_HOME"] = str(home)
    reports = [measure(case, args.overrides, args.pairs, home, quiet=args.json) for case in args.case or sorted(CASES)]
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
