"""The worker's trial hook on real training, and the final state ``pruned`` through every reader.

A study (journal storage) holds one finished trial whose error was 0 at every epoch; a
MedianPruner with one startup trial therefore prunes our trial at its first evaluation.
The real worker (``python -m lowrank.train``) trains it in a subprocess, so the report and
the prune decision go through the storage across processes, as on any backend.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lowrank.rundir import RESULTS_FILE, RunDir, read_jsonl
from lowrank.trial import TUNE_FILE, build_pruner, open_storage

from console.cli import app

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow  # three real worker runs
PRUNER = {"name": "median", "n_startup_trials": 1, "n_warmup_steps": 0}


def tiny_config(epochs: int = 4) -> dict:
    from lowrank.config import from_dict

    return from_dict({"name": "trial", "model": {"name": "tiny_convnet", "kwargs": {"width": 8}},
                      "data": {"name": "synthetic", "batch_size": 16,
                               "kwargs": {"image_size": 8, "num_train": 64, "num_val": 32, "num_test": 32}},
                      "train": {"epochs": epochs, "device": "cpu", "lr": 0.05},
                      "log": {"checkpoint_every": 10, "step_every": 2}}).to_dict()


def worker(run: RunDir, *extra: str) -> subprocess.CompletedProcess:
    code = ("import sys; from lowrank.train.worker import main; code = main(sys.argv[1:]); "
            "print('optuna imported:', 'optuna' in sys.modules); sys.exit(code)")
    return subprocess.run([sys.executable, "-c", code, str(run.path), *extra], capture_output=True, text=True,
                          cwd=REPO, timeout=180)


@pytest.fixture
def pruned_run(home):
    import optuna
    from optuna.distributions import FloatDistribution

    storage_url = f"journal:{home / 'studies' / 's.journal'}"
    study = optuna.create_study(study_name="s", storage=open_storage(storage_url), pruner=build_pruner(PRUNER))
    dist = {"train.lr": FloatDistribution(1e-3, 1.0, log=True)}
    study.add_trial(optuna.trial.create_trial(params={"train.lr": 0.05}, distributions=dist, value=0.0,
                                              intermediate_values={step: 0.0 for step in range(1, 5)}))
    trial = study.ask(dist)
    spec = {"storage": storage_url, "study": "s", "trial_id": trial._trial_id, "trial_number": trial.number,
            "metric": "best_val_err1", "pruner": PRUNER}
    run = RunDir.create(tiny_config(), home=home, files={TUNE_FILE: json.dumps(spec)},
                        extra_status={"study": "s", "trial": trial.number})
    trial.set_user_attr("run_id", run.run_id)
    result = worker(run)
    return run, study, trial, result


@pytest.mark.slow
@pytest.mark.subprocess
def test_a_pruned_trial_stops_cleanly_and_every_reader_shows_pruned(pruned_run, home):
    run, study, trial, result = pruned_run
    assert result.returncode == 0, result.stdout + result.stderr
    assert "pruned: pruned by the study's pruner at epoch 1" in result.stdout
    status = run.read_status()
    assert status["state"] == "pruned" and status["epoch"] == 1 and status["pruned_epoch"] == 1
    assert status["exit_code"] == 0 and status["results_written"] is True and status["error"] is None
    assert status["best_val_err1"] is not None and status["params"] > 0
    events = read_jsonl(run.file("metrics.jsonl"))
    assert [e["epoch"] for e in events if e["event"] == "epoch"] == [1]  # stopped at the first epoch boundary
    assert events[-1]["event"] == "end" and events[-1]["state"] == "pruned"
    assert not any(e["event"] == "test" for e in events)
    assert run.file("checkpoint.pt").exists()  # a clean boundary: the epoch's checkpoint is written
    # the study saw the report from the worker process
    frozen = study.get_trials(deepcopy=False)[trial.number]
    assert frozen.intermediate_values == {1: status["best_val_err1"]}

    # results.csv: a row in state pruned, with the best so far
    rows = list(csv.DictReader((home / RESULTS_FILE).open()))
    assert [(row["run_id"], row["state"]) for row in rows] == [(run.run_id, "pruned")]
    assert float(rows[0]["best_val_err1"]) == pytest.approx(status["best_val_err1"])

    # ls --json, ls --state pruned, the ls table
    runner = CliRunner()
    listed = json.loads(runner.invoke(app, ["ls", "--json"]).stdout)
    assert [(item["run_id"], item["state"]) for item in listed] == [(run.run_id, "pruned")]
    assert json.loads(runner.invoke(app, ["ls", "--json", "--state", "pruned"]).stdout)[0]["run_id"] == run.run_id
    assert json.loads(runner.invoke(app, ["ls", "--json", "--state", "finished"]).stdout) == []
    table = runner.invoke(app, ["ls"]).stdout
    assert "pruned" in table and "1/4" in table

    # the console's row and state filter
    from console.tui.format import STATE_STYLES
    from console.tui.watch import RunWatcher

    assert "pruned" in STATE_STYLES
    (record,) = RunWatcher(home).scan().values()
    assert record.info.state == "pruned"

    # compare: a pruned run is labelled, never averaged in as a result
    from console import compare

    summary = compare.summarize([{"method": "separable", "budget": None, "state": "pruned", "params": 1,
                                  "dense_params": 2, "best_val_err1": 50.0, "test_err1": None}])
    assert summary[0]["finished"] == 0 and summary[0]["states"] == {"pruned": 1}
    assert summary[0]["best_val_err1_mean"] is None

    # the driver tells the study PRUNED, with the last reported value
    from console.tune.driver import settle

    manifest = {"metric": "best_val_err1", "trials": {}}
    assert settle(study, frozen, manifest, home) == "pruned"
    told = study.get_trials(deepcopy=False)[trial.number]
    assert told.state.name == "PRUNED" and told.value == pytest.approx(status["best_val_err1"])
    assert settle(study, told, manifest, home) in (None, "pruned")  # idempotent


@pytest.mark.slow
@pytest.mark.subprocess
def test_an_ordinary_run_never_imports_optuna(home):
    run = RunDir.create(tiny_config(epochs=1), home=home)
    result = worker(run)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "optuna imported: False" in result.stdout
    assert run.read_status()["state"] == "finished"


@pytest.mark.slow
@pytest.mark.subprocess
def test_a_bad_tune_file_fails_the_run_in_one_line(home):
    run = RunDir.create(tiny_config(epochs=1), home=home, files={TUNE_FILE: json.dumps({"study": "s"})})
    result = worker(run)
    assert result.returncode == 1
    status = run.read_status()
    assert status["state"] == "failed" and "not a trial description: missing storage" in status["error"]
