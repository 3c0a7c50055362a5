"""results.csv carries the Bayesian compression figures (issue 14), and a file written before those
columns existed is migrated under the results lock with every row kept, never rewritten when it is
not ours to understand."""

from __future__ import annotations

import csv

from lowrank.rundir import RESULT_COLUMNS, RESULTS_FILE, append_result

OLD_COLUMNS = RESULT_COLUMNS[:RESULT_COLUMNS.index("compression_architecture")]


def _rows(path):
    with open(path, newline="") as handle:
        return list(csv.reader(handle))


def test_bayes_figures_have_their_columns(tmp_path):
    append_result({"run_id": "b1", "test_err1": 1.95, "compression_architecture": 41.8,
                   "compression_precision": 174.5, "pruned_test_err1": 1.95, "quantised_test_err1": 2.23,
                   "dense_baseline_err1": 1.67}, home=tmp_path)
    header, row = _rows(tmp_path / RESULTS_FILE)
    values = dict(zip(header, row))
    assert values["compression_architecture"] == "41.8" and values["dense_baseline_err1"] == "1.67"
    assert values["pruned_test_err1"] == "1.95" and values["compression_precision"] == "174.5"


def test_an_older_header_is_migrated_and_keeps_every_row(tmp_path):
    path = tmp_path / RESULTS_FILE
    old_row = ["old1"] + ["x"] * (len(OLD_COLUMNS) - 1)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(OLD_COLUMNS)
        writer.writerow(old_row)
    append_result({"run_id": "new1", "compression_architecture": 7.0}, home=tmp_path)
    header, first, second = _rows(path)
    assert tuple(header) == RESULT_COLUMNS
    assert first[:len(OLD_COLUMNS)] == old_row and len(first) == len(RESULT_COLUMNS)
    assert dict(zip(header, second))["compression_architecture"] == "7.0"


def test_a_header_we_do_not_know_is_written_under_as_it_is(tmp_path):
    path = tmp_path / RESULTS_FILE
    path.write_text("run_id,my_note,test_err1\nr0,keep me,3.0\n")
    append_result({"run_id": "r1", "test_err1": 2.5, "compression_architecture": 9.0}, home=tmp_path)
    assert path.read_text() == "run_id,my_note,test_err1\nr0,keep me,3.0\nr1,,2.5\n"


BEFORE_LATENCY = RESULT_COLUMNS[:RESULT_COLUMNS.index("latency_ms_b1")]


def test_latency_figures_have_their_columns(tmp_path):
    append_result({"run_id": "l1", "latency_ms_b1": 0.42, "throughput": 1234.5, "throughput_batch": 64,
                   "latency_device": "cpu: AMD EPYC", "latency_threads": 2, "latency_torch": "2.14.1"}, home=tmp_path)
    header, row = _rows(tmp_path / RESULTS_FILE)
    values = dict(zip(header, row))
    assert values["latency_ms_b1"] == "0.42" and values["throughput"] == "1234.5"
    assert values["latency_device"] == "cpu: AMD EPYC" and values["latency_threads"] == "2"


def test_a_header_from_before_the_latency_columns_is_migrated_keeping_every_row(tmp_path):
    """A results.csv of round 2 (Bayesian columns, no latency): migrated, every row kept as it was."""
    path = tmp_path / RESULTS_FILE
    rows = [["r%d" % index] + [str(index)] * (len(BEFORE_LATENCY) - 1) for index in range(3)]
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(BEFORE_LATENCY)
        writer.writerows(rows)
    append_result({"run_id": "new", "latency_ms_b1": 1.5, "latency_device": "cuda: H100"}, home=tmp_path)
    header, *kept, new = _rows(path)
    assert tuple(header) == RESULT_COLUMNS
    assert [row[:len(BEFORE_LATENCY)] for row in kept] == rows
    assert all(row[len(BEFORE_LATENCY):] == [""] * (len(RESULT_COLUMNS) - len(BEFORE_LATENCY)) for row in kept)
    assert dict(zip(header, new))["latency_ms_b1"] == "1.5"
