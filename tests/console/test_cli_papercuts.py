"""CLI papercuts of issue 15: -h, --version, no <bool> placeholder on flags, [plot] shown,
ls shows the 20 most recent runs (--all, -n), "no runs yet" names the LOWRANK_HOME."""

from __future__ import annotations

import json
import re

import pytest
from typer.testing import CliRunner

from lowrank import __version__
from lowrank.rundir import RunDir

from console.cli import app

runner = CliRunner()


@pytest.mark.parametrize("args", [["-h"], ["--help"], ["ls", "-h"], ["compare", "show", "-h"], ["show", "-h"]])
def test_short_and_long_help(args):
    out = runner.invoke(app, args, terminal_width=100)
    assert out.exit_code == 0 and "Usage:" in out.output, out.output


def test_version_option():
    for flag in ("--version", "-V"):
        out = runner.invoke(app, [flag])
        assert out.exit_code == 0 and out.output.strip() == f"lowrank {__version__}"


def test_flags_have_no_type_placeholder_and_values_keep_theirs():
    text = runner.invoke(app, ["ls", "--help"], terminal_width=100).output
    assert "<bool>" not in text
    assert re.search(r"--last\s+-n\s+<int>", text)  # an option that takes a value still says what


def test_plot_extra_is_not_swallowed_as_markup():
    text = runner.invoke(app, ["compare", "show", "--help"], terminal_width=200).output
    assert "lowrank[plot]" in text


@pytest.mark.slow
def test_ls_shows_the_20_most_recent_unless_all(home):
    ids = [f"20240301-12{i:04d}-r-{i:04x}" for i in range(25)]
    for run_id in ids:
        RunDir.create({"name": "r", "train": {"epochs": 1}}, home=home, run_id=run_id)
    out = runner.invoke(app, ["ls"])
    assert sum(run_id in out.output for run_id in ids) == 20 and ids[-1] in out.output and ids[4] not in out.output
    assert "20 most recent of 25" in out.output
    assert sum(run_id in runner.invoke(app, ["ls", "--all"]).output for run_id in ids) == 25
    assert sum(run_id in runner.invoke(app, ["ls", "-n", "3"]).output for run_id in ids) == 3
    assert len(json.loads(runner.invoke(app, ["ls", "--json"]).output)) == 25


def test_no_runs_yet_names_the_home(home):
    out = runner.invoke(app, ["ls"])
    assert "no runs yet" in out.output and str(home) in out.output
