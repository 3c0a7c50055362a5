"""``lowrank tune`` end to end with the real worker and the real detached scheduler on the CPU:
a Hyperband study with two trials in flight, ``tune show`` (table, importance, plots, JSON),
``tune resume`` adding trials, and a budget-matched study whose hp is solved per trial."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lowrank.rundir import RunDir, runs_root
from lowrank.trial import TUNE_FILE

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def write_preset(tmp_path: Path, epochs: int = 3, width: int = 8) -> Path:
    preset = {"name": "tune-e2e", "model": {"name": "tiny_convnet", "kwargs": {"width": width}},
              "data": {"name": "synthetic", "batch_size": 16,
                       "kwargs": {"image_size": 8, "num_train": 64, "num_val": 32, "num_test": 32}},
              "train": {"epochs": epochs, "device": "cpu", "lr": 0.05},
              "log": {"checkpoint_every": 10, "step_every": 2}}
    path = tmp_path / "tune-e2e.yaml"
    path.write_text(yaml.safe_dump(preset))
    return path


@pytest.fixture
def env(home, monkeypatch):
    monkeypatch.delenv("LOWRANK_WORKER", raising=False)
    monkeypatch.delenv("LOWRANK_MAX_CPU_RUNS", raising=False)  # --parallel 2 must raise the limit itself
    monkeypatch.setenv("LOWRANK_SCHEDULER_POLL", "0.1")
    return {**os.environ}


def cli(*args: str, env: dict, timeout: float = 400) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "from console.cli import main; main()", *args],
                          capture_output=True, text=True, cwd=REPO, timeout=timeout, env=env)


def trial_runs(home: Path) -> list[RunDir]:
    return [RunDir(path) for path in sorted(runs_root(home).iterdir())]


@pytest.mark.slow
@pytest.mark.subprocess
def test_hyperband_study_in_parallel_show_and_resume(env, home, tmp_path):
    preset = write_preset(tmp_path)
    result = cli("tune", str(preset), "--space", "train.lr=log:1e-3:0.3", "--space", "train.weight_decay=log:1e-6:1e-2",
                 "--trials", "3", "--parallel", "2", "--name", "hb", "--seed", "0", "--poll", "0.2", "--no-plot",
                 env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "best: trial" in result.stdout and "importance" in result.stdout
    runs = trial_runs(home)
    assert len(runs) == 3
    for run in runs:  # ordinary run directories, tagged, each with its trial description
        status = run.read_status()
        assert status["study"] == "hb" and status["state"] in ("finished", "pruned")
        spec = json.loads(run.file(TUNE_FILE).read_text())
        assert spec["study"] == "hb" and spec["trial_number"] == status["trial"]
        assert spec["pruner"] == {"name": "hyperband", "min_resource": 1, "max_resource": 3, "reduction_factor": 3}
        config = run.read_config()
        assert config["train"]["lr"] == pytest.approx(status["tune_params"]["train.lr"])
        assert config["train"]["weight_decay"] == pytest.approx(status["tune_params"]["train.weight_decay"])
    # two trials were in flight at once: a worker process was started before another had ended.
    # status.json's started/ended are whole seconds, and the training itself lasts milliseconds
    # here (the worker's life is mostly its imports), so a span is from the worker process's
    # creation (create_time, float, recorded by the launcher) to its last metric line.
    spans = sorted((run.read_status()["create_time"], max(record["time"] for record in run.read_metrics()))
                   for run in runs)
    assert any(later[0] < earlier[1] for earlier, later in zip(spans, spans[1:])), spans

    report = json.loads(cli("tune", "show", "last", "--json", env=env).stdout)
    assert report["study"] == "hb" and len(report["trials"]) == 3
    assert sum(report["counts"].values()) == 3 and set(report["counts"]) <= {"complete", "pruned"}
    best = report["best"]
    complete = [t for t in report["trials"] if t["state"] == "complete"]
    assert best["value"] == min(t["value"] for t in complete)
    best_status = RunDir(runs_root(home) / best["run_id"]).read_status()
    assert best_status["best_val_err1"] == pytest.approx(best["value"])
    shown = cli("tune", "show", "hb", env=env).stdout
    assert "train.lr" in shown and "vs trial" in shown  # table and plotext plots

    resumed = cli("tune", "resume", "hb", "--trials", "1", "--no-plot", "--poll", "0.2", env=env)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    report = json.loads(cli("tune", "show", "hb", "--json", env=env).stdout)
    assert len(report["trials"]) == 4 and report["trials_requested"] == 4
    assert len(trial_runs(home)) == 4
    listed = json.loads(cli("tune", "ls", "--json", env=env).stdout)
    assert [(item["study"], item["trials"]) for item in listed] == [("hb", 4)]


@pytest.mark.slow
@pytest.mark.subprocess
def test_budget_matched_study_solves_hp_per_trial(env, home, tmp_path):
    preset = write_preset(tmp_path, epochs=1, width=16)
    result = cli("tune", str(preset), "--space", "model.kwargs.width=cat:12,24", "--method", "generic",
                 "--budget", "0.2", "--pruner", "none", "--trials", "2", "--parallel", "2", "--seed", "3",
                 "--name", "bm", "--poll", "0.2", "--no-plot", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    runs = trial_runs(home)
    assert runs
    for run in runs:
        config, status = run.read_config(), run.read_status()
        assert config["substitute"]["method"] == "generic" and config["substitute"]["budget"] is None
        assert config["substitute"]["hp"] is not None  # pinned: config.yaml says exactly what ran
        assert status["state"] == "finished" and status["tune_budget"] == 0.2
        assert abs(status["params"] - 0.2 * status["dense_params"]) / (0.2 * status["dense_params"]) < 0.15
    widths = {run.read_config()["model"]["kwargs"]["width"]: run.read_config()["substitute"]["hp"] for run in runs}
    if len(widths) == 2:  # both widths drawn: each got its own hp for the same budget
        assert widths[12] != widths[24]
