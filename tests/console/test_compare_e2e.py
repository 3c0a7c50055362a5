"""``lowrank compare`` end to end with the real worker (``python -m lowrank.train``) and the
real detached scheduler on the CPU: a 3 methods x 2 budgets sweep to completion, its
table, plots, JSON and results.csv rows; then an interrupted sweep resumed.

Tiny on purpose: tiny_convnet width 8 on 8x8 synthetic images, 64 training images,
batch 16. Width 8 reaches only ~0.17-0.27 of the dense parameters with these methods,
hence budgets 0.2 and 0.22.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from lowrank.rundir import RESULTS_FILE, RunDir, read_jsonl, runs_root

from console import compare
from console.cli import app
from console.launch import kill_run
from fake_worker import wait_for

REPO = Path(__file__).resolve().parents[2]
METHODS = "generic,tt,sep_hashed"
runner = CliRunner()

pytestmark = pytest.mark.slow


def write_preset(tmp_path: Path, epochs: int = 1) -> Path:
    preset = {"name": "e2e", "model": {"name": "tiny_convnet", "kwargs": {"width": 8}},
              "data": {"name": "synthetic", "batch_size": 16,
                       "kwargs": {"image_size": 8, "num_train": 64, "num_val": 32, "num_test": 32}},
              "train": {"epochs": epochs, "device": "cpu", "lr": 0.05},
              "log": {"checkpoint_every": 1, "step_every": 1}}
    path = tmp_path / "e2e.yaml"
    path.write_text(yaml.safe_dump(preset))
    return path


@pytest.fixture
def env(home, monkeypatch):
    """The real worker; a fast-polling scheduler allowed two CPU runs at once."""
    monkeypatch.delenv("LOWRANK_WORKER", raising=False)
    monkeypatch.setenv("LOWRANK_SCHEDULER_POLL", "0.1")
    monkeypatch.setenv("LOWRANK_MAX_CPU_RUNS", "2")
    return {**os.environ}


def cli(*args: str, env: dict, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "from console.cli import main; main()", *args],
                          capture_output=True, text=True, cwd=REPO, timeout=timeout, env=env)


@pytest.mark.slow
@pytest.mark.subprocess
def test_sweep_runs_to_completion_and_shows_table_plot_json_and_results(env, home, tmp_path):
    out = cli("compare", str(write_preset(tmp_path)), "--methods", METHODS, "--budgets", "0.2,0.22", "--cpu", env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    (sweep_id,) = compare.sweep_ids(home)
    # the plan, the live table's last frame, then the result table and both plots
    assert "6 run(s) planned" in out.stdout and f"{sweep_id}: 6 finished" in out.stdout
    assert "vs parameters (log scale)" in out.stdout and "vs mult-adds (log scale)" in out.stdout

    shown = runner.invoke(app, ["compare", "show", sweep_id])
    assert shown.exit_code == 0 and "final val" in shown.stdout and "vs mult-adds" in shown.stdout
    data = json.loads(runner.invoke(app, ["compare", "show", sweep_id, "--json"]).stdout)
    manifest = compare.read_manifest(sweep_id, home)
    assert [(r["method"], r["budget"]) for r in data["rows"]] == [
        (m, b) for m in METHODS.split(",") for b in (0.2, 0.22)]
    for row, entry in zip(data["rows"], manifest["entries"]):
        status = RunDir(runs_root(home) / entry["run_id"]).read_status()
        assert (row["finished"], row["runs"]) == (1, 1)
        assert (row["hp"], row["params"], row["macs"]) == (entry["hp"], entry["params"], entry["macs"])
        assert row["params"] == status["params"] and status["hp"] == entry["hp"]  # the worker built the plan's net
        assert row["test_err1_mean"] == status["test_err1"] and row["test_err1_std"] is None
        assert 0 <= row["best_val_err1_mean"] <= row["final_val_err1_mean"] <= 100

    # results.csv (plain csv module): one row per run, grouped by the sweep id
    with open(home / RESULTS_FILE, newline="") as handle:
        by_sweep: dict[str, list[dict]] = {}
        for row in csv.DictReader(handle):
            by_sweep.setdefault(row["sweep"], []).append(row)
    assert list(by_sweep) == [sweep_id]
    assert sorted((r["method"], float(r["hp"]), int(r["params"])) for r in by_sweep[sweep_id]) == sorted(
        (e["method"], e["hp"], e["params"]) for e in manifest["entries"])
    assert {r["run_id"] for r in by_sweep[sweep_id]} == {e["run_id"] for e in manifest["entries"]}


@pytest.mark.slow
@pytest.mark.subprocess
def test_interrupted_sweep_resumes_only_unfinished_runs(env, home, tmp_path):
    epochs = 20
    out = cli("compare", str(write_preset(tmp_path, epochs=epochs)), "--methods", METHODS, "--budgets", "0.2",
              "--cpu", "--detach", "--json", env=env)
    assert out.returncode == 0, out.stderr
    sweep_id = json.loads(out.stdout)["sweep"]
    ids = [e["run_id"] for e in compare.read_manifest(sweep_id, home)["entries"]]
    runs = [RunDir(runs_root(home) / run_id) for run_id in ids]

    # two CPU slots: once two runs are going, the third stays queued; it is cancelled there,
    # then one of the two running is killed mid-way (after a checkpoint)
    states = lambda: [run.read_status().get("state") for run in runs]  # noqa: E731
    wait_for(lambda: states().count("running") == 2, 120, 0.02, "two runs to start")
    last = runs[states().index("queued")]
    assert kill_run(last).state == "killed" and last.read_status()["error"] == "cancelled before it started"
    # epochs done, from metrics.jsonl: the worker rewrites status.json at most every 2 s (issue 12)
    done = lambda run: sum(1 for r in run.read_metrics() if r.get("event") == "epoch")  # noqa: E731
    first = wait_for(lambda: next((run for run in runs if run.read_status().get("state") == "running"
                                   and done(run) >= 2), None), 120, 0.02, "a run past epoch 2")
    report = kill_run(first)
    assert report.state == "killed" and 2 <= done(first) < epochs
    middle = next(run for run in runs if run not in (first, last))
    wait_for(lambda: middle.read_status().get("state") == "finished", 120, 0.1, "the untouched run to finish")

    resumed = cli("compare", "resume", sweep_id, "--detach", "--json", env=env)
    assert resumed.returncode == 0, resumed.stderr
    actions = {a.get("previous") or a["run_id"]: a for a in json.loads(resumed.stdout)["actions"]}
    assert actions[first.run_id]["action"] == "resumed" and actions[first.run_id]["run_id"] == first.run_id
    assert actions[middle.run_id]["action"] == "kept"
    assert actions[last.run_id]["action"] == "relaunched" and actions[last.run_id]["run_id"] != last.run_id

    rows = wait_for(lambda: (rows := compare.progress(compare.read_manifest(sweep_id, home), home))
                    and compare.is_done(rows) and rows, 180, 0.2, "the resumed sweep to end")
    assert [row["state"] for row in rows] == ["finished"] * 3
    status = first.read_status()
    assert status["epoch"] == epochs and len(status["previous_attempts"]) == 1
    starts = [r for r in read_jsonl(first.file("metrics.jsonl")) if r.get("event") == "start"]
    assert [bool(r.get("resumed")) for r in starts] == [False, True]  # continued from its checkpoint
    assert middle.read_status()["attempt"] == 1  # never relaunched
    assert last.read_status()["state"] == "killed"  # the cancelled run stays as it was
    manifest = compare.read_manifest(sweep_id, home)
    replaced = next(e for e in manifest["entries"] if e["history"])
    assert replaced["history"] == [last.run_id]
    assert RunDir(runs_root(home) / replaced["run_id"]).read_status()["sweep"] == sweep_id
