"""Does distillation help a strongly compressed student on the 8x8 digits? (issue 4)

Trains a dense tiny_convnet teacher once, then the same compressed student (generic
low-rank bottleneck at a small parameter budget) with and without the teacher, over
several seeds, with the real worker (``lowrank.train.main``) in a temporary
LOWRANK_HOME. Prints one line per run and the mean test errors.

    .venv/bin/python benchmarks/distill_digits.py [--seeds 0 1 2] [--epochs 15] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BASE = ["train.device=cpu", "log.checkpoint_every=1000", "log.step_every=1000", "data.augment.random_crop=true"]


def teacher_overrides(epochs: int, width: int) -> list[str]:
    return [*BASE, "name=digits_teacher", f"model.kwargs.width={width}", "substitute.method=dense",
            f"train.epochs={epochs}"]


def student_overrides(epochs: int, seed: int, budget: float, teacher: str | None, alpha: float,
                      at_beta: float, temperature: float) -> list[str]:
    overrides = [*BASE, f"name=digits_student_{'kd' if teacher else 'plain'}", "model.kwargs.width=32",
                 "substitute.method=generic", f"substitute.budget={budget}", f"train.epochs={epochs}",
                 f"train.seed={seed}"]
    if teacher:
        overrides += [f"teacher.checkpoint={teacher}", f"distill.alpha={alpha}", f"distill.at_beta={at_beta}",
                      f"distill.temperature={temperature}"]
    return overrides


def run(overrides: list[str]) -> dict:
    """Run the quickstart preset with ``overrides`` through the real worker; its final status."""
    from lowrank.config import load
    from lowrank.rundir import RunDir
    from lowrank.train import main

    config = load(REPO / "presets" / "quickstart.yaml", overrides)
    run_dir = RunDir.create(config.to_dict())
    if main([str(run_dir.path)]) != 0:
        raise SystemExit(f"run failed: {run_dir.read_status().get('error')}")
    return {"run_id": run_dir.run_id, **run_dir.read_status()}


def compare(seeds: list[int], epochs: int, teacher_epochs: int, teacher_width: int, budget: float,
            alpha: float, at_beta: float, temperature: float) -> dict:
    """Teacher once, then plain and distilled students per seed; returns every figure."""
    teacher = run(teacher_overrides(teacher_epochs, teacher_width))
    rows = []
    for seed in seeds:
        plain = run(student_overrides(epochs, seed, budget, None, alpha, at_beta, temperature))
        kd = run(student_overrides(epochs, seed, budget, teacher["run_id"], alpha, at_beta, temperature))
        rows.append({"seed": seed, "plain_err1": plain["test_err1"], "distilled_err1": kd["test_err1"],
                     "student_params": plain["params"], "dense_params": plain["dense_params"]})
    return {"teacher_err1": teacher["test_err1"], "teacher_params": teacher["params"], "rows": rows,
            "plain_mean": statistics.mean(r["plain_err1"] for r in rows),
            "distilled_mean": statistics.mean(r["distilled_err1"] for r in rows)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--teacher-epochs", type=int, default=15)
    parser.add_argument("--teacher-width", type=int, default=64)
    parser.add_argument("--budget", type=float, default=0.1)
    parser.add_argument("--alpha", type=float, default=0.9)
    parser.add_argument("--at-beta", type=float, default=0.0)
    parser.add_argument("--temperature", type=float, default=4.0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    os.environ.setdefault("LOWRANK_HOME", tempfile.mkdtemp(prefix="lowrank-distill-"))
    result = compare(args.seeds, args.epochs, args.teacher_epochs, args.teacher_width, args.budget, args.alpha,
                     args.at_beta, args.temperature)
    print(f"teacher (tiny_convnet width {args.teacher_width}, dense, {result['teacher_params']:,} params): "
          f"test err {result['teacher_err1']:.2f}%")
    for row in result["rows"]:
        print(f"seed {row['seed']}: student ({row['student_params']:,} params) plain {row['plain_err1']:.2f}% "
              f"distilled {row['distilled_err1']:.2f}%")
    print(f"mean: plain {result['plain_mean']:.2f}%  distilled {result['distilled_mean']:.2f}%")
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, **result}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
