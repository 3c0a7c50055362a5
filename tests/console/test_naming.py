"""Run names that show the overrides (``quickstart tt@0.1``), ``--name``, and ids from them."""

from __future__ import annotations

from pathlib import Path

import pytest

from lowrank.errors import UserError

from console.commands.run import _prepare
from console.naming import override_name

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("overrides, expected", [
    ([], "quickstart"),
    (["substitute.method=tt", "substitute.budget=0.1"], "quickstart tt@0.1"),
    (["substitute.budget=0.25"], "quickstart @0.25"),
    (["substitute.method=dense", "train.epochs=5"], "quickstart dense epochs=5"),
    (["train.lr=0.1", "distill.lr=0.2"], "quickstart train.lr=0.1 distill.lr=0.2"),  # same leaf: full keys
    (["train.schedule.milestones=[60,120]", "train.nesterov=true"], "quickstart milestones=60,120 nesterov=true"),
    (["train.device=cpu", "data.workers=4", "resources.gpus=1", "log.step_every=5"], "quickstart"),
    (["name=mine", "train.lr=0.1"], "mine"),
])
def test_override_name(overrides, expected):
    assert override_name("quickstart", overrides) == expected


def test_run_with_overrides_is_named_after_them(home):
    run = _prepare(REPO / "presets/quickstart.yaml", ["substitute.method=tt", "substitute.budget=0.1",
                                                      "train.epochs=1"], None, placement={})
    status = run.read_status()
    assert status["name"] == "quickstart tt@0.1 epochs=1" == run.read_config()["name"]
    assert "-quickstart-tt-0-1-epochs-1-" in run.run_id


def test_name_option_wins(home):
    run = _prepare(REPO / "presets/quickstart.yaml", ["train.epochs=1"], None, placement={}, name="wd study a")
    assert run.read_status()["name"] == "wd study a"


def test_empty_name_is_refused(home):
    from typer.testing import CliRunner

    from console.cli import app

    out = CliRunner().invoke(app, ["run", str(REPO / "presets/quickstart.yaml"), "--name", " ", "--detach"])
    assert out.exit_code != 0 and isinstance(out.exception, UserError) and "--name" in str(out.exception)
    assert not (home / "runs").exists()
