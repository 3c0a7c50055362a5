"""Readers survive any file: hand-corrupted run directories never crash or hide a run.

Each case corrupts one file of a finished run that sits beside a healthy one, then every
reader runs through the real ``lowrank`` entry point: ``ls``, ``ls --json`` (always valid
JSON, non-finite numbers as null), ``logs``, ``plot`` and ``compare show`` (table and
``--json``). A reader may refuse with a one-line user error (exit 2, e.g. "nothing to
plot"), never a traceback; ``ls`` always lists both runs, and a run whose status or config
cannot be read is shown as ``unreadable: <reason>``. The console test is in
tests/console/tui/test_corrupt_console.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import pytest

from lowrank.rundir import RunDir

GOOD = "20240301-120000-good-a001"
BAD = "20240301-130000-bad-b002"
SWEEP = "sweep-20240301-130000-c003"
BIG_LINE = 50 * 1024 * 1024  # the audit's 50 MB metrics line


def make_run(home: Path, run_id: str) -> RunDir:
    """A finished run with metrics, a log and a results-style status."""
    config = {"name": run_id.split("-")[2], "model": {"name": "tiny_convnet", "kwargs": {}},
              "data": {"name": "digits"}, "substitute": {"method": "generic", "budget": 0.25},
              "train": {"epochs": 2, "device": "cpu"}}
    run = RunDir.create(config, home=home, run_id=run_id, extra_status={"sweep": SWEEP})
    for epoch in (1, 2):
        run.append_metric({"event": "step", "epoch": epoch, "batch": 5, "batches": 10, "split": "train",
                           "loss": 1.0 / epoch, "err1": 30.0 / epoch})
        run.append_metric({"event": "eval", "epoch": epoch, "split": "val", "loss": 1.2 / epoch, "err1": 35.0 / epoch})
    run.update_status(state="finished", epoch=2, epochs=2, started="2024-03-01T12:00:00+00:00",
                      ended="2024-03-01T12:10:00+00:00", params=1000, macs=5000, dense_params=4000,
                      method="generic", hp=0.5, best_val_err1=17.5, test_err1=18.0, exit_code=0)
    run.file("output.log").write_text("epoch 1/2 train loss 1.0\nepoch 2/2 train loss 0.5\nfinished\n")
    return run


def write_manifest(home: Path) -> None:
    entries = [{"run_id": rid, "method": "generic", "budget": 0.25, "seed": seed, "hp": 0.5, "params": 1000,
                "macs": 5000} for seed, rid in enumerate((GOOD, BAD))]
    manifest = {"sweep": SWEEP, "name": "corrupt", "preset": "x.yaml", "model": "tiny_convnet", "dataset": "digits",
                "dense_params": 4000, "dense_macs": 20000, "methods": ["generic"], "entries": entries}
    (home / "sweeps").mkdir(parents=True, exist_ok=True)
    (home / "sweeps" / f"{SWEEP}.json").write_text(json.dumps(manifest))


def _write(name: str, content) -> Callable[[Path], None]:
    def corrupt(run: Path) -> None:
        path = run / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
    return corrupt


def _status_with(**fields) -> Callable[[Path], None]:
    def corrupt(run: Path) -> None:
        status = json.loads((run / "status.json").read_text())
        status.update(fields)
        (run / "status.json").write_text(json.dumps(status))  # json.dumps writes NaN / Infinity as given
    return corrupt


def _directory(name: str) -> Callable[[Path], None]:
    def corrupt(run: Path) -> None:
        (run / name).unlink()
        (run / name).mkdir()
    return corrupt


def _append_metrics(data: bytes) -> Callable[[Path], None]:
    def corrupt(run: Path) -> None:
        with open(run / "metrics.jsonl", "ab") as handle:
            handle.write(data)
    return corrupt


def _big_line(run: Path) -> None:
    with open(run / "metrics.jsonl", "ab") as handle:
        handle.write(b'{"event": "step", "epoch": 1, "loss": 1, "junk": "' + b"x" * BIG_LINE + b'"}\n')


def _remove(name: str) -> Callable[[Path], None]:
    return lambda run: (run / name).unlink()


# (case id, corruption, shown as unreadable in ls)
CASES = [
    ("status-list", _write("status.json", "[1, 2, 3]"), True),
    ("status-null", _write("status.json", "null"), True),
    ("status-number", _write("status.json", "42"), True),
    ("status-directory", _directory("status.json"), True),
    ("status-empty", _write("status.json", ""), True),
    ("status-torn", _write("status.json", '{"state": "runn'), True),
    ("status-not-utf8", _write("status.json", b'{"state": "finished", "name": "caf\xe9"}'), True),
    ("status-binary", _write("status.json", b"\x00\x01\x02\xff"), True),
    ("status-deep-nesting", _write("status.json", "[" * 100_000 + "]" * 100_000), True),
    ("status-state-int", _status_with(state=5), True),
    ("status-state-unknown", _status_with(state="exploded"), True),
    ("status-no-state", _write("status.json", '{"run_id": "x"}'), True),
    ("status-epoch-str", _status_with(epoch="three", epochs="ten"), True),
    ("status-gpus-str", _status_with(gpus="0,1"), True),
    ("status-params-str", _status_with(params="lots", macs=[1]), True),
    ("status-err-nan", _status_with(best_val_err1=float("nan"), test_err1=float("inf")), True),
    ("status-loss-infinity", _status_with(last_loss=float("-inf")), True),
    ("status-name-dict", _status_with(name={"a": 1}), True),
    ("status-pid-str-running", _status_with(state="running", pid="123", host=None), True),
    ("status-error-markup", _status_with(state="failed", error="boom [/bold] [red]x\x1b]0;pwned\x07\x1b[2J"), False),
    ("status-name-escapes", _status_with(name="\x1b]0;pwned\x07[/]\x1b[31mevil"), False),
    ("config-list", _write("config.yaml", "- 1\n- 2\n"), True),
    ("config-binary", _write("config.yaml", b"\x00\xff\xfe binary"), True),
    ("config-latin1", _write("config.yaml", b"name: caf\xe9\n"), True),
    ("config-string-sections", _write("config.yaml", "name: x\nmodel: resnet\nsubstitute: fast\ntrain: long\n"), True),
    ("config-bad-yaml", _write("config.yaml", "name: [unclosed\n  model: {\n"), True),
    ("config-null", _write("config.yaml", ""), True),
    ("config-missing", _remove("config.yaml"), True),
    ("config-directory", _directory("config.yaml"), True),
    ("config-binary-row-owed", lambda run: (_status_with(results_written=False)(run),
                                            _write("config.yaml", b"\x00\xff")(run)), True),
    ("metrics-non-objects", _append_metrics(b'[1, 2]\n3\n"text"\nnull\ntrue\n'), False),
    ("metrics-not-utf8", _append_metrics(b'{"event": "step", "epoch": 2, "loss": "\xff\xfe"}\n\xff\xfe\xfd\n'), False),
    ("metrics-nan-infinity", _append_metrics(b'{"event": "step", "epoch": 2, "batch": 9, "batches": 10, '
                                             b'"split": "train", "loss": NaN, "err1": Infinity}\n'
                                             b'{"event": "eval", "epoch": 3, "loss": -Infinity, "err1": NaN}\n'), False),
    ("metrics-wrong-types", _append_metrics(b'{"event": "step", "epoch": "two", "batch": "x", "batches": 0, '
                                            b'"loss": "low", "err1": [1]}\n{"event": 5, "epoch": {}}\n'), False),
    ("metrics-50mb-line", _big_line, False),
    ("metrics-torn-giant-tail", _append_metrics(b'{"event": "step", "loss": "' + b"y" * (2 << 20)), False),
    ("metrics-directory", _directory("metrics.jsonl"), False),
    ("metrics-missing", _remove("metrics.jsonl"), False),
    ("log-escapes-not-utf8", _write("output.log", b"\x1b]0;pwned\x07\x1b[2Jline \xff\xfe [/bold]\r\n"), False),
    ("log-directory", _directory("output.log"), False),
]


def strict_json(text: str):
    """json.loads that refuses NaN / Infinity (which are not JSON)."""
    def refuse(name):
        raise ValueError(f"{name} is not JSON")
    return json.loads(text, parse_constant=refuse)


def assert_no_terminal_control(text: str) -> None:
    assert "\x1b" not in text and "\x07" not in text and "\x9b" not in text, repr(text[:400])


@pytest.mark.parametrize("case", CASES, ids=[case[0] for case in CASES])
@pytest.mark.subprocess
def test_every_reader_survives(case, lowrank):
    _, corrupt, unreadable = case
    home = lowrank.home
    make_run(home, GOOD)
    bad = make_run(home, BAD)
    write_manifest(home)
    corrupt(bad.path)

    code, out, err = lowrank("ls")
    assert code == 0, err
    assert GOOD in out and BAD in out  # never hidden
    assert_no_terminal_control(out + err)
    bad_line = next(line for line in out.splitlines() if BAD in line)
    assert ("unreadable" in bad_line) == unreadable, bad_line
    if unreadable:
        assert f"{BAD}: unreadable: " in err  # the reason, on its own line

    code, out, err = lowrank("ls", "--json")
    assert code == 0, err
    rows = {row["run_id"]: row for row in strict_json(out)}
    assert set(rows) == {GOOD, BAD}
    assert (rows[BAD]["state"] == "unreadable") == unreadable
    if unreadable:
        assert rows[BAD]["error"].startswith("unreadable: ")
    assert rows[GOOD]["state"] == "finished"

    for reader in (["logs", BAD], ["logs", BAD, "--tail", "1"], ["plot", BAD, "--no-color", "--width", "80"],
                   ["plot", BAD, GOOD, "--no-color", "--width", "80"], ["compare", "show", SWEEP],
                   ["compare", "show", SWEEP, "--csv"]):
        code, out, err = lowrank(*reader)
        assert code in (0, 2), (reader, code, err)
        if code == 2:
            assert len(err.strip().splitlines()) == 1, (reader, err)
        assert_no_terminal_control(out + err)

    code, out, err = lowrank("compare", "show", SWEEP, "--json")
    assert code == 0, err
    shown = {run["run_id"]: run for run in strict_json(out)["runs"]}
    assert shown[GOOD]["state"] == "finished"
    assert (shown[BAD]["state"] == "unreadable") == (unreadable and not case[0].startswith("config"))


def test_plot_skips_non_finite_points(tmp_path):
    from console.plotting import curves

    records = [{"event": "step", "epoch": 1, "batch": 5, "batches": 10, "split": "train", "loss": 1.0},
               {"event": "step", "epoch": 1, "batch": 10, "batches": 10, "split": "train", "loss": float("nan")},
               {"event": "step", "epoch": 2, "batch": 5, "batches": 10, "split": "train", "loss": float("inf")},
               {"event": "step", "epoch": "x", "batch": 5, "batches": 10, "split": "train", "loss": 2.0},
               {"event": "step", "epoch": 2, "batch": 10, "batches": 10, "split": "train", "loss": "low"},
               {"event": "eval", "epoch": 2, "split": "val", "loss": 0.5},
               {"event": "eval", "epoch": float("nan"), "split": "val", "loss": 0.25}]
    assert curves(records, "loss") == {"train": ([0.5], [1.0]), "val": ([2.0], [0.5])}


def test_logs_shows_escapes_instead_of_obeying_them(lowrank):
    run = make_run(lowrank.home, GOOD)
    run.file("output.log").write_bytes(b"plain\n\x1b]0;pwned\x07\x1b[31mred\x1b[0m\n")
    code, out, _ = lowrank("logs", GOOD)
    assert code == 0
    assert out == "plain\n\\x1b]0;pwned\\x07\\x1b[31mred\\x1b[0m\n"


def test_markup_in_an_error_cannot_crash_ls(lowrank):
    """The audit's case: an error message containing ``[/bold]`` crashed ``lowrank ls``."""
    run = make_run(lowrank.home, GOOD)
    run.update_status(state="failed", error="closing tag [/bold] without opener [/] and [link=x]y")
    code, out, err = lowrank("ls")
    assert code == 0
    assert "[/bold] without opener [/] and [link=x]y" in err


def test_unreadable_status_is_replaced_not_merged_by_the_writer(tmp_path):
    """The worker's next status write replaces a corrupt status.json instead of crashing on it."""
    run = make_run(tmp_path, GOOD)
    run.file("status.json").write_text("[1, 2]")
    assert run.read_status()["state"] == "unreadable"
    run.update_status(state="running", epoch=1)
    assert run.read_status()["state"] == "running" and "unreadable" not in run.read_status()


EVIL = "\x1b]0;pwned\x07\x9b2J\x9d0;t\x9c[/bold]\u202eevil"


def test_manifest_and_metric_strings_never_reach_the_terminal_raw(lowrank):
    """A sweep manifest's method and names, and a metric key, end up in plot titles and
    legends, CSV cells and the sweep list: each is stripped of control characters, and
    markup in them cannot crash rich (before: compare ls raised MarkupError, the plots and
    the CSV carried the escapes)."""
    home = lowrank.home
    make_run(home, GOOD)
    bad = make_run(home, BAD)
    bad.append_metric({"event": "step", "epoch": 2, "batch": 10, "batches": 10, "split": "train", EVIL: 1.0})
    write_manifest(home)
    path = home / "sweeps" / f"{SWEEP}.json"
    manifest = json.loads(path.read_text())
    manifest.update(name=EVIL, model=EVIL, preset=EVIL, methods=[EVIL])
    for entry in manifest["entries"]:
        entry["method"] = EVIL
    path.write_text(json.dumps(manifest))
    for reader in (["compare", "ls"], ["compare", "show", SWEEP], ["compare", "show", SWEEP, "--csv"],
                   ["plot", BAD, "-m", EVIL, "--no-color", "--width", "80"]):
        code, out, err = lowrank(*reader)
        assert code == 0, (reader, err)
        assert_no_terminal_control(out + err)
        assert "\u202e" not in out + err and "[/bold]" in out + err, reader


def test_a_damaged_config_refuses_relaunch_in_one_line(lowrank):
    """relaunch of a run whose config.yaml is not a usable mapping: one
    line naming the file, no traceback, no new run (before: AttributeError / UnicodeDecodeError)."""
    from test_bad_input import alias_bomb

    run = make_run(lowrank.home, BAD)
    run.update_status(state="killed")
    for content in (b"[1, 2]\n", b"\xff\x00binary", b"name: x\nmodel: resnet\n",
                    ("name: x\nmodel:\n  kwargs:\n" + alias_bomb(indent="    ")).encode()):
        run.file("config.yaml").write_bytes(content)
        code, out, err = lowrank("relaunch", BAD)
        assert code == 2, (content[:20], err)
        assert len(err.strip().splitlines()) == 1 and "config.yaml" in err, err
        assert sorted(p.name for p in (lowrank.home / "runs").iterdir()) == [BAD]


def _entries(**fields):
    return lambda manifest: {**manifest, "entries": [{**entry, **fields} for entry in manifest["entries"]]}


# (case id, change of the sweep manifest): types a hand edit or a planted file can give it
MANIFEST_CASES = [
    ("entries-dict", lambda m: {**m, "entries": {"a": 1}}), ("entries-ints", lambda m: {**m, "entries": [1, 2]}),
    ("run-id-int", _entries(run_id=5)), ("run-id-list", _entries(run_id=[1])),
    ("run-id-traversal", _entries(run_id="../../../../tmp")), ("method-list", _entries(method=[1])),
    ("budget-str", _entries(budget="big")), ("budget-list", _entries(budget=[1])), ("grid-list", _entries(grid=[1])),
    ("grid-str", _entries(grid="x")), ("methods-dicts", lambda m: {**m, "methods": [{}]}),
    ("budgets-strs", lambda m: {**m, "budgets": ["a"]}), ("not-an-object", lambda m: [1]),
]


@pytest.mark.parametrize("case", MANIFEST_CASES, ids=[case[0] for case in MANIFEST_CASES])
@pytest.mark.subprocess
def test_every_sweep_reader_survives_a_corrupt_manifest(case, lowrank):
    """compare ls / show (table, --json, --csv) of a sweep whose manifest has the wrong types:
    before, each case was a traceback in at least one of them (TypeError, ValueError)."""
    home = lowrank.home
    make_run(home, GOOD)
    make_run(home, BAD)
    write_manifest(home)
    path = home / "sweeps" / f"{SWEEP}.json"
    path.write_text(json.dumps(case[1](json.loads(path.read_text()))))
    code, out, _ = lowrank("compare", "ls")
    assert code == 0 and SWEEP in out  # listed, never hidden
    code, out, _ = lowrank("compare", "ls", "--json")
    assert code == 0 and SWEEP in {row["sweep"] for row in strict_json(out)}
    for reader in (["compare", "show", SWEEP], ["compare", "show", SWEEP, "--csv"], ["compare", "show", SWEEP, "--json"]):
        code, out, err = lowrank(*reader)
        assert code in (0, 2), (reader, err)
        if code == 2:
            assert len(err.strip().splitlines()) == 1, err
        elif "--json" in reader:
            strict_json(out)
