"""``lowrank tune`` input: SPEC parsing, the values a trial's overrides carry, and bad input
refused in one line with nothing created (no study, no manifest, no run)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lowrank.errors import UserError

from console.tune.space import check_space, overrides_for, parse_param, parse_space, yaml_value

REPO = Path(__file__).resolve().parents[2]
QUICKSTART = str(REPO / "presets" / "quickstart.yaml")


@pytest.mark.parametrize("text, kind, low, high, choices", [
    ("train.lr=log:1e-6:1e-2", "log", 1e-6, 1e-2, ()),
    ("train.lr=float:0.01:0.2", "float", 0.01, 0.2, ()),
    ("model.kwargs.width=int:2:8", "int", 2, 8, ()),
    ("substitute.options.order=cat:riffle,random,none", "cat", None, None, ("riffle", "random", "none")),
    ("x.y=cat:1,2.5,true,null", "cat", None, None, (1, 2.5, True, None)),
    # bounds the manifest once wrote with :g (6 digits, 1e+07 for an int) and read back changed
    ("model.kwargs.width=int:1:10000000", "int", 1, 10000000, ()),
    ("train.lr=float:0.123456789:0.2", "float", 0.123456789, 0.2, ()),
    ("train.lr=log:1.23456789e-06:0.01", "log", 1.23456789e-06, 0.01, ()),
])
def test_specs_parse(text, kind, low, high, choices):
    param = parse_param(text)
    assert (param.key, param.kind, param.low, param.high, param.choices) == (text.split("=")[0], kind, low, high,
                                                                            choices)
    assert parse_param(f"{param.key}={param.spec}") == param  # the manifest's form reads back the same


@pytest.mark.parametrize("text, words", [
    ("train.lr=log:0:1", "0 < LO < HI"),
    ("train.lr=log:-1:1", "0 < LO < HI"),
    ("train.lr=float:2:1", "LO < HI"),
    ("train.lr=float:1:1", "LO < HI"),
    ("train.lr=float:a:1", "must be numbers"),
    ("train.lr=float:nan:1", "LO < HI"),
    ("model.kwargs.width=int:1.5:3", "must be integers"),
    ("train.lr=log:1", "is not log:LO:HI"),
    ("train.lr=log:1:2:3", "is not log:LO:HI"),
    ("train.lr=uniform:0:1", "unknown kind 'uniform'"),
    ("x=cat:a", "two or more distinct"),
    ("x=cat:a,a", "two or more distinct"),
    ("x=cat:a,,b", "an empty choice"),
    ("x=cat:[1],2", "not a scalar"),
    ("train.lr", "expected KEY=SPEC"),
    ("=log:1:2", "expected KEY=SPEC"),
    ("train..lr=log:1:2", "expected KEY=SPEC"),
])
def test_bad_specs_are_one_line_errors(text, words):
    with pytest.raises(UserError) as caught:
        parse_param(text)
    assert words in str(caught.value) and "\n" not in str(caught.value)
    assert str(caught.value).startswith("--space")


def test_space_needs_one_key_once():
    with pytest.raises(UserError, match="no --space"):
        parse_space([])
    with pytest.raises(UserError, match="searched twice"):
        parse_space(["train.lr=log:1e-3:1e-1", "train.lr=float:0.1:0.2"])


@pytest.mark.parametrize("value", [1e-05, 3.3e-7, 0.05, 1.5e10, 2, True, None, "riffle", "none"])
def test_override_values_read_back_as_the_same_value(value):
    """PyYAML reads '1e-05' as a string: the override of a float must carry a decimal point."""
    (override,) = overrides_for({"train.lr": value})
    assert yaml.safe_load(override.split("=", 1)[1]) == value
    assert type(yaml.safe_load(yaml_value(value))) is type(value)


def test_check_space_validates_every_end_through_the_loader():
    seen = []
    check_space(parse_space(["train.lr=log:1e-3:0.3", "train.optimizer=cat:sgd,adam"]), seen.append)
    assert ["train.lr=0.3", "train.optimizer=sgd"] in seen and ["train.lr=0.001", "train.optimizer=adam"] in seen


def cli(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "from console.cli import main; main()", *args],
                          capture_output=True, text=True, cwd=cwd, timeout=120)


@pytest.mark.parametrize("args, words", [
    (["--space", "train.lr=log:0:1"], "a log range needs 0 < LO < HI"),
    (["--space", "train.nope=float:0.1:1"], "--space: train.nope: unknown key"),
    (["--space", "train.lr=float:-1:1"], "--space: train.lr"),
    # both ends of a float range on an integer key pass the schema (1.0, 5.0); no draw between does
    (["--space", "train.epochs=float:1:5"], "--space: train.epochs: Input should be a valid integer"),
    (["--space", "train.epochs=log:1:8"], "--space: train.epochs: Input should be a valid integer"),
    (["--space", "train.lr=log:1e-3:0.3", "--method", "nope", "--budget", "0.1"], "unknown method 'nope'"),
    (["--space", "train.lr=log:1e-3:0.3", "--budget", "1.5"], "budget 1.5 is not a fraction"),
    (["--space", "train.lr=log:1e-3:0.3", "--metric", "test_loss"], "unknown metric 'test_loss'"),
    (["--space", "train.lr=log:1e-3:0.3", "--pruner", "asha"], "unknown pruner 'asha'"),
    (["--space", "train.lr=log:1e-3:0.3", "--backend", "pbs"], "unknown backend 'pbs'"),
    (["--space", "train.lr=log:1e-3:0.3", "--name", "last"], "bad study name"),
    (["--space", "train.lr=log:1e-3:0.3", "--trials", "0"], "--trials"),
    (["--space", "train.lr=log:1e-3:0.3", "--parallel", "0"], "--parallel must be >= 1"),
    (["--space", "train.lr=log:1e-3:0.3", "--set", "train.nope=1"], "train.nope: unknown key"),
])
def test_bad_tune_input_creates_nothing(home, args, words):
    from typer.testing import CliRunner

    from console.cli import app

    trials = [] if "--trials" in args else ["--trials", "3"]
    result = CliRunner().invoke(app, ["tune", QUICKSTART, *trials, *args, "--cpu"])
    assert isinstance(result.exception, UserError), result.output  # main() prints it as one line, exit 2
    assert words in str(result.exception) and "\n" not in str(result.exception)
    assert not home.exists() or not any(home.rglob("*")), sorted(home.rglob("*"))


@pytest.mark.subprocess
def test_slurm_backend_without_slurm_answers_in_one_line(home, tmp_path):
    """--backend slurm goes through the backend registry; where sbatch is absent it says so in one
    line and creates nothing (the Slurm tests run trials on a real cluster)."""
    import os

    empty = tmp_path / "bin"
    empty.mkdir()
    result = subprocess.run([sys.executable, "-c", "from console.cli import main; main()", "tune", QUICKSTART,
                             "--trials", "2", "--space", "train.lr=log:1e-3:0.3", "--backend", "slurm"],
                            capture_output=True, text=True, cwd=REPO, timeout=120,
                            env={**os.environ, "PATH": str(empty)})
    assert result.returncode == 2 and "Slurm is not available" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert not home.exists() or not any(home.rglob("*"))


@pytest.mark.subprocess
def test_show_of_an_unknown_study_is_one_line(home):
    result = cli("tune", "show", "last")
    assert result.returncode == 2 and "no study matches 'last'" in result.stderr
    result = cli("tune", "ls")
    assert result.returncode == 0 and "no studies yet" in result.stdout
