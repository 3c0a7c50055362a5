"""The run-id grammar every command accepts: full id, last, last~N, tails, prefixes."""

from __future__ import annotations

import pytest

from lowrank.errors import UserError

from console.run_ids import match_run_id, resolve_in

IDS = ["20240301-120000-quickstart-987b", "20240301-120100-quickstart-a006",
       "20240301-120200-wrn-live-a006", "20240301-120300-quickstart-tt-0.1-c3d4"]


@pytest.mark.parametrize("text, expected", [
    ("20240301-120000-quickstart-987b", IDS[0]),
    ("last", IDS[3]), ("latest", IDS[3]), ("last~0", IDS[3]), ("last~1", IDS[2]), ("last~3", IDS[0]),
    ("987b", IDS[0]),  # the suffix shown in legends and the console
    ("live-a006", IDS[2]), ("quickstart-a006", IDS[1]),  # a longer tail when the 4-hex clashes
    ("c3d4", IDS[3]), ("0.1-c3d4", IDS[3]),
    ("20240301-1201", IDS[1]), ("wrn", IDS[2]), ("quickstart-tt", IDS[3]),
])
def test_accepted_forms(text, expected):
    assert match_run_id(text, IDS) == expected


@pytest.mark.parametrize("text, message", [
    ("a006", "matches 2 runs"), ("quickstart", "matches 3 runs"), ("last~4", "only 4 run(s)"),
    ("zzzz", "no run matches 'zzzz'"), ("", "no run matches"),
])
def test_refused_forms(text, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        match_run_id(text, IDS)


def test_last_with_no_runs_says_where(tmp_path):
    with pytest.raises(UserError, match="only 0 run"):
        resolve_in(tmp_path / "runs", "last")


def test_every_command_takes_the_same_grammar(home):
    """logs, plot, show, kill, relaunch and run --resume resolve ids through one grammar: before,
    `lowrank logs last` failed ("no run matches 'last'") while `compare show last` worked."""
    from typer.testing import CliRunner

    from lowrank.rundir import RunDir, now_iso

    from console.cli import app

    older = RunDir.create({"name": "first", "train": {"epochs": 1}}, home=home)
    newer = RunDir.create({"name": "second", "train": {"epochs": 1}}, home=home)
    for run, text in ((older, "older's output"), (newer, "newer's output")):
        run.file("output.log").write_text(text + "\n")
        run.append_metric({"event": "eval", "epoch": 1, "split": "val", "err1": 12.5, "loss": 0.5})
        run.update_status(state="finished", ended=now_iso())
    runner = CliRunner()
    assert "newer's output" in runner.invoke(app, ["logs", "last"]).output
    assert "older's output" in runner.invoke(app, ["logs", "last~1"]).output
    suffix = older.run_id.rsplit("-", 1)[1]  # the 4-hex tail the console and legends show
    assert "older's output" in runner.invoke(app, ["logs", suffix]).output
    shown = runner.invoke(app, ["plot", "last"])
    assert shown.exit_code == 0, shown.output
    killed = runner.invoke(app, ["kill", "last~1"])  # an ended run: nothing to stop, but it is found
    assert "no run matches" not in killed.output, killed.output
    assert older.run_id in killed.output or "not running" in killed.output.lower(), killed.output
