"""`lowrank run` and `lowrank count` through the real entry point (a subprocess, as a user types it)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
QUICK = str(REPO / "presets" / "quickstart.yaml")


def lowrank(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "console.cli", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.slow
@pytest.mark.subprocess
def test_count_json_has_the_documented_keys(home, tmp_path):
    result = lowrank("count", QUICK, "--set", "substitute.method=generic", "--set", "substitute.budget=0.2",
                     "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    for key in ("params", "macs", "dense_params", "dense_macs", "method", "hp", "budget_target", "budget_gap"):
        assert key in data, key
    assert data["method"] == "generic" and data["dense_params"] == 75114
    assert abs(data["params"] - 0.2 * 75114) / (0.2 * 75114) < 0.01 and abs(data["budget_gap"]) < 0.01
    assert sum(row["params"] for row in data["layers"]) == data["params"]


@pytest.mark.slow
@pytest.mark.subprocess
def test_count_unreachable_budget_is_one_clear_message(home, tmp_path):
    result = lowrank("count", QUICK, "--set", "substitute.method=generic", "--set", "substitute.budget_params=10",
                     cwd=tmp_path)
    assert result.returncode == 2
    assert "cannot reach" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("overrides,key", [
    (["--set", "train.epochs=-1"], "train.epochs"),
    (["--set", "model.kwargs.depth=3"], "model.kwargs.depth"),
    (["--set", "substitute.method=nope"], "substitute.method"),
])
@pytest.mark.subprocess
def test_run_with_bad_input_creates_nothing(home, tmp_path, overrides, key):
    result = lowrank("run", QUICK, *overrides, cwd=tmp_path)
    assert result.returncode == 2
    assert key in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) <= 3
    assert not (home / "runs").exists() or not list((home / "runs").iterdir())


@pytest.mark.slow
@pytest.mark.subprocess
def test_run_foreground_json_summary(home, tmp_path):
    result = lowrank("run", QUICK, "--json", "--set", "train.epochs=2", "--set", "train.device=cpu", cwd=tmp_path)
    assert result.returncode == 0, result.stderr + result.stdout
    summary = json.loads(result.stdout)
    assert summary["state"] == "finished" and summary["method"] == "separable"
    assert summary["params"] == 11018 and summary["test_err1"] is not None
    assert Path(summary["run_dir"]).is_dir() and Path(summary["run_dir"]).parent == home / "runs"


@pytest.mark.slow
@pytest.mark.subprocess
def test_ctrl_c_stops_a_foreground_run_cleanly(home, tmp_path):
    import signal
    import time

    import psutil

    from lowrank.rundir import RunDir

    cli = subprocess.Popen([sys.executable, "-m", "console.cli", "run", QUICK, "--set", "train.epochs=500",
                            "--set", "train.device=cpu"], cwd=tmp_path, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    run = None
    while time.monotonic() < deadline:
        runs = list((home / "runs").glob("*")) if (home / "runs").exists() else []
        if runs and any(r.get("event") == "step" for r in RunDir(runs[0]).read_metrics()):
            run = RunDir(runs[0])
            break
        time.sleep(0.1)
    assert run is not None, "the run never started"
    worker_pid = run.read_status()["pid"]
    cli.send_signal(signal.SIGINT)  # what the terminal sends on Ctrl-C
    out, err = cli.communicate(timeout=60)
    status = run.read_status()
    assert status["state"] == "killed", (status, err)
    assert "killed" in out
    assert not psutil.pid_exists(worker_pid) or psutil.Process(worker_pid).status() == psutil.STATUS_ZOMBIE
    assert run.read_metrics()[-1]["event"] == "end"


DARTS = REPO / "presets"


@pytest.mark.slow
@pytest.mark.subprocess
def test_count_darts_reports_the_deployable_network_with_the_auxiliary_head_apart(home, tmp_path):
    result = lowrank("count", str(DARTS / "darts_teacher.yaml"), "--json", "--train", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["params"] == data["dense_params"] == 3_349_342  # the DARTS paper's 3.3M
    assert data["training_only_params"] == 476_426
    assert data["training_only"] == [{"module": "auxiliary_head", "label": "auxiliary head", "params": 476_426}]
    assert sum(r["params"] for r in data["layers"] if not r["training_only"]) == 3_349_342
    assert data["train"]["batch_size"] == 96
    assert data["train"]["training_only_macs"][0]["macs"] == 695_808
    assert data["train"]["macs"] == data["macs"] + 695_808  # dense: training adds only the head


@pytest.mark.slow
@pytest.mark.subprocess
def test_count_darts_student_budget_is_of_the_deployable_network(home, tmp_path):
    result = lowrank("count", str(DARTS / "darts_student.yaml"), "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["dense_params"] == 3_349_342 and data["budget_target"] == round(0.25 * 3_349_342)
    assert abs(data["params"] - data["budget_target"]) / data["budget_target"] < 1e-3
    assert data["training_only_params"] == 476_426  # the head stays dense (skip rule), outside the budget


@pytest.mark.slow
@pytest.mark.subprocess
def test_count_table_is_a_depth_summary_unless_asked_for_layers(home, tmp_path):
    preset = str(DARTS / "darts_teacher.yaml")
    summary = lowrank("count", preset, cwd=tmp_path)
    assert summary.returncode == 0, summary.stderr
    assert "3,349,342 (+476,426 auxiliary head, training only)" in " ".join(summary.stdout.split())
    assert "cells.19" in summary.stdout and "cells.19.preprocess0" not in summary.stdout
    assert summary.stdout.count("\n") < 60  # 25 summary rows, not 500+
    full = lowrank("count", preset, "--layers", "--train", cwd=tmp_path)
    assert full.returncode == 0, full.stderr
    assert full.stdout.count("\n") > 500 and "cells.19.preprocess0" in full.stdout
    assert "incl. 695,808 auxiliary head" in " ".join(full.stdout.split())  # rich wraps at 80 columns
    shallow = lowrank("count", preset, "--depth", "1", cwd=tmp_path)
    assert shallow.returncode == 0 and "cells.19" not in shallow.stdout and "cells " in shallow.stdout
