"""The benchmark scripts run on a CPU: the GPU check skips its CUDA sections cleanly and writes its
report; its throughput probe and the loop-overhead harness measure real runs."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]


def load_script(name: str):
    """Import benchmarks/<name>.py as a module (the scripts are not a package)."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(REPO / "benchmarks"))
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA behaviour")
@pytest.mark.slow
@pytest.mark.subprocess
def test_gpu_check_without_cuda_writes_a_report_with_every_section_skipped(tmp_path):
    out = tmp_path / "report.json"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_check.py"), "--out", str(out)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    report = json.loads(out.read_text())
    assert report["cuda"] is False and report["failed"] == []
    for section in ("bench_layers", "throughput", "latency_table", "loop_overhead"):
        assert "no CUDA" in report[section]["skipped"]
    assert "skipped" in report["nvml_and_kill"] and "snapshot" in report["nvml_and_kill"]


@pytest.mark.slow
def test_throughput_probe_measures_training_steps_on_cpu():
    gpu_check = load_script("gpu_check")
    row = gpu_check.throughput("resnet9", {"width": 4}, "fp32", device="cpu", batch=4, steps=2, warmup=1,
                               image_size=16)
    assert row["img_per_s"] > 0 and row["peak_memory_mb"] is None and row["mode"] == "fp32"
    row = gpu_check.throughput("resnet9", {"width": 4}, "bf16_cl", device="cpu", batch=4, steps=1, warmup=1,
                               image_size=16)
    assert row["img_per_s"] > 0


@pytest.mark.slow
@pytest.mark.subprocess
def test_overhead_harness_and_bare_loop_do_the_same_training(home):
    overhead = load_script("overhead")
    result = overhead.measure("quickstart", ["train.epochs=2"], pairs=1, home=home, quiet=True, sequential=True)
    row = result["rows"][0]
    # same seed, same data order, same updates: the two loops reach the same test error
    assert result["same_test_err1"] and result["mode"] == "sequential", row
    assert row["ratio"] == pytest.approx(row["harness"]["seconds"] / row["bare"]["seconds"])
    assert result["ratio_min"] <= result["ratio_median"] <= result["ratio_max"]


@pytest.mark.slow
def test_interleaved_turns_change_nothing_but_when_each_side_runs(home):
    """Epoch turns in two threads: each side draws its own random numbers (the same test error as
    running alone), hands over once per epoch, and is timed over its own turns only."""
    overhead = load_script("overhead")
    alone = overhead.measure("quickstart", ["train.epochs=3"], pairs=1, home=home, quiet=True, sequential=True)
    for harness_first in (False, True):
        import time

        start = time.perf_counter()
        row = overhead.interleaved_pair(overhead_config(overhead, ["train.epochs=3"]), home,
                                        harness_first=harness_first)
        wall = time.perf_counter() - start
        assert row["bare"]["test_err1"] == row["harness"]["test_err1"] == alone["rows"][0]["bare"]["test_err1"]
        assert row["bare"]["turns"] == row["harness"]["turns"] == 4  # 3 hand-overs and the last stretch
        assert 0 < row["bare"]["seconds"] and 0 < row["harness"]["seconds"]
        assert row["bare"]["seconds"] + row["harness"]["seconds"] <= wall  # waits are not counted
    calibration = overhead.measure("quickstart", ["train.epochs=2"], pairs=2, home=home, quiet=True, calibrate=True)
    assert calibration["compared"] == "bare_2" and calibration["same_test_err1"]
    assert all(set(r) == {"bare", "bare_2", "ratio"} for r in calibration["rows"])


def overhead_config(overhead, overrides):
    from lowrank.config import load

    preset, base = overhead.CASES["quickstart"]
    return load(REPO / "presets" / preset, [*base, *overrides])


def test_solve_benchmark_times_real_solves_and_marks_unreachable_budgets():
    solve = load_script("solve")
    rows = solve.measure([REPO / "presets" / "quickstart.yaml"], ["tt", "generic"], repeat=1, default_budget=0.1)
    assert [row["method"] for row in rows] == ["tt", "generic"]
    for row in rows:  # the solved network meets the budget as build_network reports it
        assert row["hp"] is not None and abs(row["achieved"] - row["target"]) / row["target"] < 0.05
        assert 0 < row["min_s"] <= row["median_s"] <= row["max_s"]
    out_of_reach = solve.measure([REPO / "presets" / "quickstart.yaml"], ["tt"], repeat=1, default_budget=0.9)
    assert out_of_reach[0].get("unreachable") is True


@pytest.mark.slow
def test_latency_table_times_every_network_of_a_preset_against_dense(tmp_path):
    table = load_script("latency_table")
    out, figures = tmp_path / "latency.md", tmp_path / "latency.json"
    assert table.main(["--presets", "quickstart", "--methods", "separable,acdc,tt", "--threads", "1",
                       "--batches", "1,4", "--repeat", "2", "--out", str(out), "--json", str(figures)]) == 0
    text = out.read_text()
    rows = {line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith("| ")}
    assert {"dense", "separable", "acdc@0.1", "acdc@0.2", "tt@0.1"} <= set(rows)
    assert "not built" in rows["tt@0.2"]  # tt cannot reach 0.2 of the quickstart: said, not hidden
    data = json.loads(figures.read_text())
    built = [row for row in data["results"][0]["rows"] if "error" not in row]
    assert built[0]["label"] == "dense" and built[0]["params_ratio"] == 1.0
    for row in built:
        assert set(row["times"]) == {"float32 eager b1 t1", "float32 eager b4 t1"}
        assert all(timing["ratio"] > 0 for timing in row["times"].values())
    separable = next(row for row in built if row["label"] == "separable")
    assert separable["params_ratio"] == 11018 / 75114
