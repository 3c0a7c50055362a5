"""Sweeps over any key: ``lowrank compare --grid KEY=V1,V2`` (repeatable, cartesian with
methods x budgets x seeds), each grid point budget-matched to its own dense network, and
``compare show`` grouping by every swept key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from lowrank.errors import ConfigError, UserError

from console import compare
from console.cli import app

runner = CliRunner()


def write_preset(tmp_path: Path) -> Path:
    preset = {"name": "tiny", "model": {"name": "tiny_convnet", "kwargs": {"width": 16}},
              "data": {"name": "synthetic", "batch_size": 16,
                       "kwargs": {"image_size": 8, "num_train": 64, "num_val": 32, "num_test": 32}},
              "train": {"epochs": 1, "device": "cpu"}}
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(preset))
    return path


def test_parse_grid():
    assert compare.parse_grid(["train.weight_decay=1e-4,5e-4", "train.schedule.milestones=[60,120],[30,60]"]) == {
        "train.weight_decay": ["1e-4", "5e-4"], "train.schedule.milestones": ["[60,120]", "[30,60]"]}
    assert compare.grid_points({"a.x": ["1", "2"], "b.y": ["3"]}) == [{"a.x": "1", "b.y": "3"}, {"a.x": "2", "b.y": "3"}]
    assert compare.grid_points({}) == [{}]
    assert compare.grid_label({"train.lr": "0.1", "distill.lr": "0.2", "model.kwargs.width": "8"}) == \
        "train.lr=0.1 distill.lr=0.2 width=8"


@pytest.mark.parametrize("texts, message", [
    (["train.seed=1,2"], "sweep's own axes"), (["substitute.budget=0.1"], "sweep's own axes"),
    (["train.lr"], "expected KEY=V1,V2"), (["train.lr=0.1,,0.2"], "empty value"),
    (["train.lr=0.1", "train.lr=0.2"], "given twice"),
])
def test_bad_grid_is_one_error(texts, message):
    with pytest.raises(UserError, match=message):
        compare.parse_grid(texts)


def test_plan_is_cartesian_and_budget_matched_per_grid_point(tmp_path):
    preset = write_preset(tmp_path)
    grid = compare.parse_grid(["model.kwargs.width=8,16", "train.weight_decay=1e-4,5e-4"])
    plan = compare.plan_sweep(preset, ["generic", "dense"], [0.2], seeds=2, grid=grid)
    assert len(plan.entries) == 4 * 2 * 2  # grid points x (generic@0.2 + dense ref) x seeds
    assert plan.grid == grid
    assert not plan.problems
    for entry in plan.runnable:
        config = entry.config
        assert config["model"]["kwargs"]["width"] == int(entry.grid["model.kwargs.width"])
        assert config["train"]["weight_decay"] == float(entry.grid["train.weight_decay"])
        assert config["train"]["seed"] == entry.seed
        if entry.method == "generic":  # budget of this grid point's own dense network
            assert abs(entry.params / entry.dense_params - 0.2) < 0.05
    narrow = {e.dense_params for e in plan.entries if e.grid["model.kwargs.width"] == "8"}
    wide = {e.dense_params for e in plan.entries if e.grid["model.kwargs.width"] == "16"}
    assert len(narrow) == len(wide) == 1 and narrow != wide
    assert len({entry.name for entry in plan.entries}) == len(plan.entries)  # every run named apart
    assert "width=8-weight_decay=1e-4" in plan.entries[0].name


def test_a_bad_grid_value_names_the_key(tmp_path):
    with pytest.raises(ConfigError, match="weight_decay"):
        compare.plan_sweep(write_preset(tmp_path), ["dense"], [], grid={"train.weight_decay": ["lots"]})


def test_summary_groups_by_every_swept_key():
    rows = []
    for grid, errors in (("weight_decay=1e-4", (10.0, 12.0)), ("weight_decay=5e-4", (8.0, 9.0))):
        for seed, err in enumerate(errors):
            rows.append({"method": "tt", "budget": 0.1, "grid": grid, "seed": seed, "state": "finished",
                         "params": 100, "macs": 1000, "dense_params": 1000, "test_err1": err, "hp": 2})
    summary = compare.summarize(rows, ["tt"])
    assert [(row["grid"], row["test_err1_mean"], row["runs"]) for row in summary] == [
        ("weight_decay=1e-4", 11.0, 2), ("weight_decay=5e-4", 8.5, 2)]
    series = compare._series(summary, "params", "test_err1")
    assert set(series) == {"tt weight_decay=1e-4", "tt weight_decay=5e-4"}


def test_cli_dry_run_shows_the_grid(tmp_path, home):
    preset = write_preset(tmp_path)
    out = runner.invoke(app, ["compare", str(preset), "--methods", "generic", "--budgets", "0.2",
                              "--grid", "train.weight_decay=1e-4,5e-4", "--dry-run"], terminal_width=200)
    assert out.exit_code == 0, out.output
    assert "grid" in out.output and "weight_decay=1e-4" in out.output and "weight_decay=5e-4" in out.output
    data = json.loads(runner.invoke(app, ["compare", str(preset), "--methods", "generic", "--budgets", "0.2",
                                          "-g", "train.weight_decay=1e-4,5e-4", "--dry-run", "--json"]).output)
    assert data["grid"] == {"train.weight_decay": ["1e-4", "5e-4"]}
    assert [entry["grid"] for entry in data["entries"]] == [{"train.weight_decay": "1e-4"},
                                                           {"train.weight_decay": "5e-4"}]
    assert not (home / "runs").exists()
