"""``lowrank study approx|init`` through the real command line (subprocess: one-line errors, exit codes)."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys

import pytest


def study(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "console.cli", "study", *args], capture_output=True, text=True,
                          env=env, timeout=600)


@pytest.mark.slow
@pytest.mark.subprocess
def test_approx_json_rows_for_chosen_methods_and_values():
    result = study("approx", "--method", "dense", "--method", "generic", "--method", "acdc[shuffle=none]",
                   "--hp", "generic=0.25,1", "--hp", "acdc=1,2", "--n", "8", "--steps", "150", "--seeds", "2",
                   "--jobs", "1", "--json")
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    assert payload["settings"]["n"] == 8 and payload["settings"]["steps"] == 150
    labels = [row["label"] for row in payload["rows"]]
    assert labels == ["dense", "generic rank_fraction=0.25", "generic rank_fraction=1",
                      "acdc[shuffle=none] layers=1", "acdc[shuffle=none] layers=2"]
    params = {row["label"]: row["params"] for row in payload["rows"]}
    assert params["generic rank_fraction=0.25"] == 2 * 16 and params["acdc[shuffle=none] layers=2"] == 32
    assert all(len(row["errors"]) == 2 and row["mean"] >= 0 for row in payload["rows"])


@pytest.mark.slow
@pytest.mark.subprocess
def test_approx_table_plot_and_csv():
    result = study("approx", "--method", "generic", "--hp", "generic=0.25,0.5", "--n", "8", "--steps", "50",
                   "--seeds", "2", "--jobs", "1")
    assert result.returncode == 0, result.stderr
    assert "generic rank_fraction=0.25" in result.stdout and "approximation error vs parameters" in result.stdout
    result = study("approx", "--method", "generic", "--hp", "generic=0.5", "--n", "8", "--steps", "20",
                   "--seeds", "2", "--jobs", "1", "--csv")
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [r["label"] for r in rows] == ["generic rank_fraction=0.5"] and rows[0]["params"] == "64"


@pytest.mark.slow
@pytest.mark.subprocess
def test_init_json_has_reference_stds():
    result = study("init", "--method", "acdc", "--method", "dense", "--dims", "4,8", "--seeds", "1", "--json")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)["rows"]
    assert [(r["label"], r["n"]) for r in rows] == [("acdc layers=16", 4), ("acdc layers=16", 8), ("dense", 4),
                                                     ("dense", 8)]
    assert rows[1]["glorot_std"] == pytest.approx(0.35355339059327373)


@pytest.mark.parametrize("args,needle", [
    (["approx", "--method", "nosuch"], "--method: unknown substitute method 'nosuch'"),
    (["approx", "--method", "acdc[colour=red]"], "unknown option(s) colour"),
    (["approx", "--hp", "acdc=0"], "--hp"),
    (["approx", "--method", "dense", "--hp", "acdc=1"], "no --method selects"),
    (["approx", "--target", "cauchy"], "--target"),
    (["approx", "--steps", "0"], "--steps"),
    (["init", "--dims", "4,x"], "--dims"),
])
@pytest.mark.slow
@pytest.mark.subprocess
def test_bad_input_is_one_line_and_exit_2(args, needle):
    result = study(*args)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert needle in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


@pytest.mark.slow
@pytest.mark.subprocess
def test_killed_study_leaves_no_worker_process():
    import signal
    import time

    import psutil

    proc = subprocess.Popen([sys.executable, "-m", "console.cli", "study", "approx", "--method", "acdc",
                             "--hp", "acdc=8,16,32", "--steps", "100000", "--jobs", "2", "--json"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    parent = psutil.Process(proc.pid)
    deadline = time.monotonic() + 240
    workers: list[psutil.Process] = []
    while time.monotonic() < deadline and len(workers) < 2:
        workers = [c for c in parent.children(recursive=True) if "spawn" in " ".join(c.cmdline())]
        time.sleep(0.5)
    assert len(workers) == 2, "the study never started its two workers"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    gone, alive = psutil.wait_procs(workers, timeout=30)
    assert not alive, [p.pid for p in alive]
