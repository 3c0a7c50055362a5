"""The run-directory contract: atomic status, whole metric lines, results.csv under a lock."""

from __future__ import annotations

import csv
import json
import multiprocessing as mp
import os


from lowrank.rundir import RESULT_COLUMNS, RunDir, append_result, read_jsonl


def test_create_writes_config_and_queued_status(home):
    run = RunDir.create({"name": "exp one", "train": {"epochs": 3}})
    assert run.path.parent == home / "runs"
    assert "exp-one" in run.run_id
    assert run.read_config()["name"] == "exp one"
    status = run.read_status()
    assert status["state"] == "queued" and status["epochs"] == 3 and status["run_id"] == run.run_id


def test_update_status_merges_and_never_leaves_temp_files(home):
    run = RunDir.create({"name": "x"})
    run.update_status(state="running", pid=123)
    run.update_status(epoch=2)
    status = run.read_status()
    assert (status["state"], status["pid"], status["epoch"]) == ("running", 123, 2)
    assert not [p for p in os.listdir(run.path) if p.startswith(".status.json")]


def test_final_state_is_not_overwritten_by_running(home):
    run = RunDir.create({"name": "x"})
    run.update_status(state="killed")
    run.update_status(state="running", epoch=5)
    assert run.read_status()["state"] == "killed"
    assert run.read_status()["epoch"] == 5


def test_reader_skips_a_torn_last_line(home):
    run = RunDir.create({"name": "x"})
    run.append_metric({"event": "step", "loss": 1.0})
    run.append_metric({"event": "step", "loss": 0.5})
    with open(run.file("metrics.jsonl"), "ab") as handle:
        handle.write(b'{"event": "step", "lo')  # a writer killed mid-line
    records = run.read_metrics()
    assert [r["loss"] for r in records] == [1.0, 0.5]


def test_read_jsonl_from_offset(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text('{"a": 1}\n{"a": 2}\n')
    assert read_jsonl(path, offset=len('{"a": 1}\n')) == [{"a": 2}]


def _writer(home: str, worker: int, rows: int) -> None:
    os.environ["LOWRANK_HOME"] = home
    for i in range(rows):
        append_result({"run_id": f"w{worker}-r{i}", "name": "n" * 200, "test_err1": worker + i / 1000})


def test_results_csv_intact_with_eight_concurrent_writers(home):
    rows_each = 60
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(home), w, rows_each)) for w in range(8)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(120)
        assert proc.exitcode == 0
    with open(home / "results.csv", newline="") as handle:
        lines = handle.read().splitlines()
    assert lines[0] == ",".join(RESULT_COLUMNS)          # exactly one header, first
    assert sum(1 for line in lines if line.startswith("run_id,")) == 1
    with open(home / "results.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 8 * rows_each
    assert {r["run_id"] for r in rows} == {f"w{w}-r{i}" for w in range(8) for i in range(rows_each)}
    assert all(len(r) == len(RESULT_COLUMNS) and r["name"] == "n" * 200 for r in rows)


def test_status_file_is_always_valid_json_under_concurrent_updates(home):
    run = RunDir.create({"name": "x"})
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_bump, args=(str(run.path), k)) for k in range(4)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(60)
    status = json.loads(run.file("status.json").read_text())
    assert all(status[f"counter{k}"] == 49 for k in range(4))  # no update lost


def _bump(path: str, k: int) -> None:
    run = RunDir(path)
    for i in range(50):
        run.update_status(**{f"counter{k}": i})
