"""bench.after_run: the finished run's deployable network timed and recorded with its results
(status.json, the results.csv row, a metrics event); never fails the run; on for compare sweeps."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from lowrank.config import load
from lowrank.deploy.records import SUMMARY_KEYS, device_key
from lowrank.rundir import RunDir
from lowrank.train import main

REPO = Path(__file__).resolve().parents[3]
QUICK = REPO / "presets" / "quickstart.yaml"


def _run(preset: Path, overrides: list[str]) -> RunDir:
    run = RunDir.create(load(preset, overrides).to_dict())
    assert main([str(run.path)]) == 0, run.read_status().get("error")
    return run


def test_a_run_with_after_run_records_its_latency_with_its_results(home):
    run = _run(QUICK, ["train.epochs=1", "bench.after_run=true", "bench.batch=8", "bench.repeat=2"])
    status = run.read_status()
    assert all(status.get(key) is not None for key in SUMMARY_KEYS), {k: status.get(k) for k in SUMMARY_KEYS}
    assert status["throughput_batch"] == 8 and status["latency_device"].startswith("cpu: ")
    assert status["latency_ms_b1"] > 0 and status["throughput"] > 0
    detail = status["latency"]
    assert [row["batch"] for row in detail["batches"]] == [1, 8] and detail["params"] == status["params"]
    assert device_key(status) == f"{status['latency_device']} x{status['latency_threads']} threads"
    events = [r for r in run.read_metrics() if r.get("event") == "latency"]
    assert len(events) == 1 and events[0]["latency_ms_b1"] == status["latency_ms_b1"]
    with open(run.home / "results.csv", newline="") as handle:
        row = next(r for r in csv.DictReader(handle) if r["run_id"] == run.run_id)
    assert float(row["latency_ms_b1"]) == pytest.approx(status["latency_ms_b1"])
    assert row["latency_device"] == status["latency_device"] and row["throughput_batch"] == "8"


def test_without_after_run_nothing_is_measured(home):
    status = _run(QUICK, ["train.epochs=1"]).read_status()
    assert all(key not in status for key in SUMMARY_KEYS) and "latency" not in status


def test_a_measurement_that_fails_is_recorded_and_the_run_still_finishes(home, monkeypatch):
    import lowrank.deploy.latency as latency

    def broken(*args, **kwargs):
        raise RuntimeError("timer exploded")

    monkeypatch.setattr(latency, "measure", broken)
    status = _run(QUICK, ["train.epochs=1", "bench.after_run=true"]).read_status()
    assert status["state"] == "finished" and status["latency_error"] == "RuntimeError: timer exploded"
    assert status.get("latency_ms_b1") is None


def test_a_bayesian_run_times_its_pruned_network(home):
    run = _run(REPO / "presets" / "bayes_mlp_digits.yaml",
               ["model.kwargs.hidden=[32, 16]", "train.epochs=3", "bayes.thresholds=-8", "bench.after_run=true",
                "bench.repeat=2"])
    status = run.read_status()
    assert status["latency"]["network"] == "bayes (pruned)"
    assert status["latency"]["params"] < status["dense_params"]  # the physically smaller network was timed


def test_compare_sweeps_measure_latency_unless_the_preset_says_not_to():
    from console.compare import plan_sweep

    plan = plan_sweep(QUICK, ["separable"], [], seeds=1)
    assert plan.entries[0].config["bench"]["after_run"] is True
    plan = plan_sweep(QUICK, ["separable"], [], seeds=1, overrides=["bench.after_run=false"])
    assert plan.entries[0].config["bench"]["after_run"] is False
    assert load(QUICK).bench.after_run is None  # a plain run: off
