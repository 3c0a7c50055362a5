"""``lowrank show RUN`` and ``lowrank diff RUN_A RUN_B`` through the CLI, with run ids in every form."""

from __future__ import annotations

import pytest

import json

from typer.testing import CliRunner

from lowrank.rundir import RunDir

from console.cli import app

runner = CliRunner()


def config(**train):
    return {"name": "quickstart", "model": {"name": "tiny_convnet"}, "data": {"name": "digits"},
            "substitute": {"method": "separable", "budget": 0.1},
            "train": {"epochs": 2, "lr": 0.05, "weight_decay": 5e-4, **train}}


def two_runs(home):
    first = RunDir.create(config(), home=home, run_id="20240301-120000-quickstart-987b")
    second = RunDir.create({**config(lr=0.1), "substitute": {"method": "tt", "budget": 0.1, "tt_rank": 4}},
                           home=home, run_id="20240301-120100-quickstart-a006")
    second.update_status(provenance={**second.read_status()["provenance"], "torch": "9.9", "gpu_names": ["H200"]})
    return first, second


@pytest.mark.subprocess
def test_show_prints_state_numbers_and_provenance(home):
    first, second = two_runs(home)
    first.update_status(state="finished", params=1234, test_err1=4.5, best_val_err1=5.25)
    out = runner.invoke(app, ["show", "987b"])
    assert out.exit_code == 0, out.output
    assert first.run_id in out.output and "finished" in out.output and "1,234" in out.output
    assert "test 4.50%" in out.output and "command" in out.output and "lowrank" in out.output
    last = runner.invoke(app, ["show", "last"]).output
    assert second.run_id in last and "torch" in last and "H200" in last
    data = json.loads(runner.invoke(app, ["show", "last~1", "--json"]).output)
    assert data["status"]["run_id"] == first.run_id and data["config"]["train"]["lr"] == 0.05
    assert "lr: 0.05" in runner.invoke(app, ["show", "987b", "--config"]).output


def test_show_of_a_run_without_provenance_says_so(home):
    run = RunDir.create(config(), home=home)
    status = run.read_status()
    del status["provenance"]
    run.file("status.json").write_text(json.dumps(status))
    assert "not recorded" in runner.invoke(app, ["show", "last"]).output


def test_diff_lists_the_config_keys_that_differ(home):
    first, second = two_runs(home)
    out = runner.invoke(app, ["diff", "987b", "a006"])
    assert out.exit_code == 1  # like diff(1): 1 when something differs
    lines = out.output.splitlines()
    assert any("train.lr" in line and "0.05" in line and "0.1" in line for line in lines)
    assert any("substitute.method" in line and '"separable"' in line and '"tt"' in line for line in lines)
    assert any("substitute.tt_rank" in line and "(absent)" in line and "4" in line for line in lines)
    assert not any("weight_decay" in line or "epochs" in line for line in lines)
    assert any(line.strip().startswith("torch") and "9.9" in line for line in lines)  # code differences too
    data = json.loads(runner.invoke(app, ["diff", "last~1", "last", "--json"]).output)
    assert {row["key"] for row in data["config"]} == {"train.lr", "substitute.method", "substitute.tt_rank"}
    assert {"key": "substitute.tt_rank", "a": None, "b": 4} in data["config"]


def test_diff_of_a_run_with_itself_is_empty(home):
    first, _ = two_runs(home)
    out = runner.invoke(app, ["diff", "987b", first.run_id])
    assert out.exit_code == 0 and "same config and code" in out.output


def test_unknown_run_is_one_line_error(home):
    two_runs(home)
    out = runner.invoke(app, ["show", "last~5"])
    assert out.exit_code != 0 and "only 2 run(s)" in str(out.exception)
