"""``compare show`` with measured latency (issue 23, the reading side): the latency keys of finished
runs in the rows, latency / throughput averaged per device key (never across), the x-axis registry
(``--x params,macs|latency|throughput``) with each plot's Pareto front (throughput: higher is
better), one device per axis (``--latency-on``; mixing refused in one line, nothing written), and
the table / JSON / CSV columns.

Sweeps are written as run directories and a manifest with fixed numbers (no training); the one
real sweep at the end is marked slow. The console's ``L`` key is tested in
tests/console/tui/test_compare_latency_key.py.
"""

from __future__ import annotations

import csv
import io
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from lowrank.rundir import RunDir, runs_root

from console import compare

REPO = Path(__file__).resolve().parents[2]
SWEEP = "sweep-20260101-120000-beef"
CPU, GPU = "cpu: AMD EPYC 9654", "cuda: NVIDIA H100 80GB HBM3"
CPU_KEY = f"{CPU} x2 threads"


def timed(ms: float, ips: float, device: str = CPU, threads: int | None = 2) -> dict:
    """The keys bench.after_run writes into status.json."""
    return {"latency_ms_b1": ms, "throughput": ips, "throughput_batch": 64, "latency_device": device,
            "latency_threads": threads if device.startswith("cpu") else None, "latency_torch": "2.4.0",
            "latency": {"device": device.split(":")[0], "device_name": device}}


def write_sweep(home: Path, specs: list[dict], sweep: str = SWEEP) -> str:
    """A sweep's manifest and one run directory per spec: method, budget, seed, params, err, state
    (finished), and the latency keys of ``timed`` when the spec has ``ms``."""
    entries = []
    for index, spec in enumerate(specs):
        method, budget, seed = spec["method"], spec.get("budget"), spec.get("seed", 0)
        config = {"name": f"tiny-{method}", "model": {"name": "tiny_convnet"}, "data": {"name": "synthetic"},
                  "substitute": {"method": method}, "train": {"epochs": 1, "device": "cpu"}}
        run = RunDir.create(config, home=home, run_id=f"20260101-1200{index:02d}-tiny-{method}-{index:04x}",
                            extra_status={"sweep": sweep, "sweep_method": method, "sweep_budget": budget,
                                          "sweep_seed": seed})
        status = {"state": spec.get("state", "finished"), "epoch": 1, "epochs": 1, "params": spec["params"],
                  "macs": 10 * spec["params"], "dense_params": 10_000, "hp": 0.5, "exit_code": 0,
                  "final_val_err1": spec["err"], "best_val_err1": spec["err"], "test_err1": spec["err"],
                  "train_seconds": 1.0}
        if "ms" in spec:
            status.update(timed(spec["ms"], spec["ips"], spec.get("device", CPU), spec.get("threads", 2)))
        run.update_status(**status)
        entries.append({"method": method, "budget": budget, "seed": seed, "run_id": run.run_id, "name": method,
                        "reference": budget is None, "hp": 0.5, "params": spec["params"], "macs": 10 * spec["params"],
                        "grid": {}, "dense_params": 10_000, "dense_macs": 100_000})
    methods = list(dict.fromkeys(spec["method"] for spec in specs))
    compare.write_manifest({"sweep": sweep, "created": "2026-01-01T12:00:00+00:00", "preset": "tiny.yaml",
                            "overrides": [], "methods": methods, "budgets": [0.1, 0.2], "seeds": [0, 1],
                            "name": "tiny", "model": "tiny_convnet", "dataset": "synthetic",
                            "dense_params": 10_000, "dense_macs": 100_000, "entries": entries}, home)
    return sweep


# one device: tt@0.1 two seeds, tt@0.2, generic@0.2, a killed run (its stale latency must not count)
# and a finished run without a latency
ONE_DEVICE = [
    {"method": "tt", "budget": 0.1, "seed": 0, "params": 1000, "err": 12.0, "ms": 0.20, "ips": 9000.0},
    {"method": "tt", "budget": 0.1, "seed": 1, "params": 1000, "err": 14.0, "ms": 0.24, "ips": 8000.0},
    {"method": "tt", "budget": 0.2, "seed": 0, "params": 2000, "err": 9.0, "ms": 0.30, "ips": 7000.0},
    {"method": "generic", "budget": 0.2, "seed": 0, "params": 2000, "err": 10.0, "ms": 0.25, "ips": 9500.0},
    {"method": "generic", "budget": 0.1, "seed": 0, "params": 1000, "err": 30.0, "ms": 0.01, "ips": 99999.0,
     "state": "killed"},
    {"method": "dense", "seed": 0, "params": 10_000, "err": 5.0},
]


def summary_of(home: Path, device: str | None = None) -> list[dict]:
    manifest = compare.read_manifest(SWEEP, home)
    return compare.summarize(compare.run_rows(manifest, home), manifest["methods"], device)


# ---------------------------------------------------------------- rows and summaries


@pytest.mark.subprocess
def test_run_rows_carry_the_latency_of_finished_runs_only(home):
    write_sweep(home, ONE_DEVICE)
    rows = compare.run_rows(compare.read_manifest(SWEEP, home), home)
    by_state = {(row["method"], row["budget"], row["seed"]): row for row in rows}
    first = by_state[("tt", 0.1, 0)]
    assert (first["latency_ms_b1"], first["throughput"], first["throughput_batch"]) == (0.20, 9000.0, 64)
    assert (first["latency_device"], first["latency_threads"], first["latency_torch"]) == (CPU, 2, "2.4.0")
    assert first["latency_key"] == CPU_KEY
    killed = by_state[("generic", 0.1, 0)]
    assert killed["state"] == "killed" and killed["latency_ms_b1"] is None and killed["latency_key"] is None
    assert by_state[("dense", None, 0)]["latency_key"] is None


def test_summary_averages_latency_and_throughput_per_device_key_never_across():
    rows = [{"method": "tt", "budget": 0.1, "seed": seed, "state": "finished", "params": 1000, "macs": 10_000,
             "dense_params": 10_000, "test_err1": 10.0, **timed(ms, ips, device, threads)}
            for seed, (ms, ips, device, threads) in enumerate([(0.20, 9000.0, CPU, 2), (0.30, 7000.0, CPU, 2),
                                                                (0.05, 90000.0, GPU, None), (0.9, 1000.0, CPU, 1)])]
    (row,) = compare.summarize(rows, ["tt"])
    assert set(row["latency"]) == {CPU_KEY, GPU, f"{CPU} x1 threads"}  # 1 thread is another measurement
    cpu = row["latency"][CPU_KEY]
    assert cpu["runs"] == 2 and cpu["latency_ms_b1_mean"] == pytest.approx(0.25)
    assert cpu["latency_ms_b1_std"] == pytest.approx(statistics.stdev([0.20, 0.30]))
    assert cpu["throughput_mean"] == pytest.approx(8000.0) and cpu["throughput_batch"] == 64
    gpu = row["latency"][GPU]
    assert (gpu["runs"], gpu["latency_ms_b1_mean"], gpu["latency_ms_b1_std"]) == (1, 0.05, None)
    assert row["latency_ms_b1_mean"] is None and row["latency_key"] is None  # no device asked: none flat
    (on_gpu,) = compare.summarize(rows, ["tt"], device=GPU)
    assert (on_gpu["latency_key"], on_gpu["latency_ms_b1_mean"], on_gpu["throughput_mean"]) == (GPU, 0.05, 90000.0)
    assert compare.summary_devices([row]) == {CPU_KEY: 2, GPU: 1, f"{CPU} x1 threads": 1}


# ---------------------------------------------------------------- axes, fronts, devices


def test_the_x_axes_are_one_registry():
    assert list(compare.X_AXES) == ["params", "macs", "latency", "throughput"]
    assert [axis.name for axis in compare.parse_axes(None)] == ["params", "macs"]
    assert [axis.name for axis in compare.parse_axes("latency, Throughput,latency")] == ["latency", "throughput"]
    assert compare.X_AXES["throughput"].lower_is_better is False and compare.X_AXES["latency"].lower_is_better
    assert compare.X_AXES["latency"].measured and not compare.X_AXES["params"].measured
    with pytest.raises(compare.UserError, match="unknown x axis 'speed'") as error:
        compare.parse_axes("params,speed")
    assert error.value.key == "--x"


def test_latency_axis_plots_exactly_the_finished_runs_latencies(home):
    write_sweep(home, ONE_DEVICE)
    summary = summary_of(home)
    key = compare.plot_device(summary, "latency")
    assert key == CPU_KEY
    series = compare.plot_series(summary, "latency", device=key)
    # tt@0.1 is the mean of its two seeds; the killed run's 0.01 ms and the unmeasured dense run are absent
    assert set(series) == {"tt", "generic"}
    xs, ys, errs, x_stds = series["tt"]
    assert xs == pytest.approx([0.22, 0.30]) and ys == pytest.approx([13.0, 9.0])
    assert x_stds[0] == pytest.approx(statistics.stdev([0.20, 0.24])) and x_stds[1] == 0.0
    assert series["generic"][:2] == ([0.25], [10.0])
    assert compare.plot_series(summary, "latency", device=None) == {}  # no device: nothing, never a mix
    throughput = compare.plot_series(summary, "throughput", device=key)
    assert throughput["tt"][0] == pytest.approx([7000.0, 8500.0]) and throughput["generic"][0] == [9500.0]
    text = compare.render_plots(summary, x="latency,throughput", width=100, height=16, color=False)
    assert "vs latency ms (batch 1) (log scale)" in text and "vs throughput img/s (log scale)" in text
    assert f"latency ms (batch 1) measured on {CPU_KEY}" in text
    assert "at batch 64" in text and "higher is better" in text
    assert "0.22" in text and "0.01" not in text and "vs parameters" not in text


def test_pareto_front_keeps_the_lowest_error_for_the_cost_and_the_highest_throughput(home):
    assert compare.pareto_front([(1, 9.0), (2, 7.0), (3, 8.0), (4, 5.0), (4, 6.0)]) == [(1, 9.0), (2, 7.0), (4, 5.0)]
    # throughput: a point is on the front when no point with more img/s has a lower error
    assert compare.pareto_front([(100, 8.0), (200, 9.0), (300, 7.0), (50, 6.0)], higher_is_better=True) == [
        (50, 6.0), (300, 7.0)]
    write_sweep(home, ONE_DEVICE)
    summary = summary_of(home)
    latency = compare.plot_series(summary, "latency", device=CPU_KEY)
    # each point is cheaper or better than the others: tt@0.1 (0.22 ms, 13 %), generic (0.25, 10), tt@0.2 (0.30, 9)
    assert compare.front_of(latency, "latency") == [(pytest.approx(0.22), 13.0), (0.25, 10.0), (0.30, 9.0)]
    params = compare.plot_series(summary, "params")
    assert compare.front_of(params, "params") == [(1000, 13.0), (2000, 9.0), (10_000, 5.0)]
    throughput = compare.plot_series(summary, "throughput", device=CPU_KEY)
    # generic has the most img/s (9500) at 10 %: tt@0.1 (8500, 13 %) is beaten; tt@0.2 (7000, 9 %) is not
    assert compare.front_of(throughput, "throughput") == [(7000.0, 9.0), (9500.0, 10.0)]
    assert "Pareto front" in compare.render_plots(summary, x="throughput", color=False)


MIXED = [
    {"method": "tt", "budget": 0.1, "seed": 0, "params": 1000, "err": 12.0, "ms": 0.20, "ips": 9000.0},
    {"method": "tt", "budget": 0.1, "seed": 1, "params": 1000, "err": 14.0, "ms": 0.04, "ips": 80000.0,
     "device": GPU},
    {"method": "generic", "budget": 0.2, "seed": 0, "params": 2000, "err": 10.0, "ms": 0.25, "ips": 9500.0},
    {"method": "generic", "budget": 0.2, "seed": 1, "params": 2000, "err": 11.0, "ms": 0.06, "ips": 70000.0,
     "device": GPU},
    {"method": "generic", "budget": 0.1, "seed": 0, "params": 1000, "err": 16.0, "ms": 0.05, "ips": 75000.0,
     "device": GPU},
]


def test_mixed_devices_are_refused_unless_one_is_picked(home):
    write_sweep(home, MIXED)
    summary = summary_of(home)
    with pytest.raises(compare.UserError) as error:
        compare.render_plots(summary, x="params,latency")
    assert error.value.key == "--x" and "--latency-on" in str(error.value) and "\n" not in str(error.value)
    assert f"{CPU_KEY} (2 runs)" in str(error.value) and f"{GPU} (3 runs)" in str(error.value)
    assert compare.plot_device(summary, "params,macs") is None  # the cost axes need no device
    assert compare.plot_device(summary, "latency", "h100") == GPU
    gpu = compare.plot_series(summary, "latency", device=GPU)
    assert gpu["tt"][0] == [0.04] and gpu["generic"][0] == [0.05, 0.06]  # GPU runs only, per group
    with pytest.raises(compare.UserError, match="matching 'tpu'") as picked:
        compare.plot_device(summary, "latency", "tpu")
    assert picked.value.key == "--latency-on"


# ---------------------------------------------------------------- the command


def test_show_table_json_and_csv_carry_the_latency_and_its_device(lowrank):
    write_sweep(lowrank.home, ONE_DEVICE)
    code, out, err = lowrank("compare", "show", "last", "--no-plot")
    assert code == 0, err
    assert "latency ms (b1)" in out and "img/s" in out and f"measured on {CPU_KEY}" in out
    tt_row = next(line for line in out.splitlines() if line.strip().startswith("tt") and "1,000" in line)
    assert f"0.220 ± {statistics.stdev([0.20, 0.24]):.3f}" in tt_row and "8500 ± 707" in tt_row
    data = json.loads(lowrank("compare", "show", "last", "--json")[1])
    assert data["latency_device"] == CPU_KEY and data["latency_devices"] == {CPU_KEY: 4}
    tt = next(row for row in data["rows"] if (row["method"], row["budget"]) == ("tt", 0.1))
    assert tt["latency_key"] == CPU_KEY and tt["latency_ms_b1_mean"] == pytest.approx(0.22)
    assert tt["latency"][CPU_KEY]["runs"] == 2 and tt["throughput_mean"] == pytest.approx(8500.0)
    assert {run["latency_key"] for run in data["runs"]} == {CPU_KEY, None}
    code, out, _ = lowrank("compare", "show", "last", "--csv")
    table = list(csv.DictReader(io.StringIO(out)))
    assert {"latency_key", "latency_ms_b1_mean", "latency_ms_b1_std", "throughput_mean", "throughput_std",
            "throughput_batch"} <= set(table[0]) and "latency" not in table[0]
    row = next(r for r in table if (r["method"], r["budget"]) == ("tt", "0.1"))
    assert row["latency_key"] == CPU_KEY and float(row["latency_ms_b1_mean"]) == pytest.approx(0.22)
    dense = next(r for r in table if r["method"] == "dense")
    assert dense["latency_ms_b1_mean"] == "" and dense["latency_key"] == ""


def test_show_x_latency_draws_the_plots_and_the_png(lowrank, tmp_path):
    pytest.importorskip("matplotlib")
    write_sweep(lowrank.home, ONE_DEVICE)
    png = tmp_path / "latency.png"
    code, out, err = lowrank("compare", "show", "last", "--x", "latency,throughput", "--png", str(png))
    assert code == 0, err
    assert f"latency ms (batch 1) measured on {CPU_KEY}" in out and "vs throughput img/s" in out
    assert "vs parameters" not in out and f"saved {png}" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_mixed_devices_refused_in_one_line_and_no_png_written(lowrank, tmp_path):
    write_sweep(lowrank.home, MIXED)
    png = tmp_path / "mixed.png"
    for args in (["--x", "latency", "--png", str(png)], ["--x", "throughput"], ["--x", "macs,latency", "--json"]):
        code, out, err = lowrank("compare", "show", "last", *args)
        assert code == 2, (args, out, err)
        assert len(err.strip().splitlines()) == 1 and "--x" in err and "--latency-on" in err, err
        assert "not comparable" in err and out == ""
    assert not png.exists()
    # the table alone shows one device (the one with most runs) and says what it leaves out
    code, out, _ = lowrank("compare", "show", "last", "--no-plot")
    flat = " ".join(out.split())
    assert code == 0 and f"measured on {GPU}" in flat and f"also measured on {CPU_KEY} (2 runs)" in flat
    code, out, err = lowrank("compare", "show", "last", "--csv")
    assert code == 0 and "--latency-on" in err and {r["latency_key"] for r in csv.DictReader(io.StringIO(out))} == {GPU}


def test_latency_on_picks_one_device(lowrank, tmp_path):
    write_sweep(lowrank.home, MIXED)
    code, out, err = lowrank("compare", "show", "last", "--x", "latency", "--latency-on", "x2 threads", "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["latency_device"] == CPU_KEY and data["latency_note"] is None
    assert {(row["method"], row["budget"]): row["latency_ms_b1_mean"] for row in data["rows"]} == {
        ("tt", 0.1): 0.20, ("generic", 0.1): None, ("generic", 0.2): 0.25}
    code, out, err = lowrank("compare", "show", "last", "--x", "latency", "--latency-on", "H100")
    assert code == 0, err
    assert f"on {GPU}" in out and f"measured on {GPU}" in out
    code, out, err = lowrank("compare", "show", "last", "--latency-on", "tpu", "--no-plot")
    assert code == 2 and "--latency-on" in err and "tpu" in err and out == ""


def test_x_latency_without_any_latency_says_how_to_get_one(lowrank, tmp_path):
    write_sweep(lowrank.home, [{"method": "tt", "budget": 0.1, "params": 1000, "err": 12.0},
                       {"method": "dense", "params": 10_000, "err": 5.0}])
    png = tmp_path / "none.png"
    code, out, err = lowrank("compare", "show", "last", "--x", "latency", "--png", str(png))
    assert code == 2 and out == "" and not png.exists()
    assert len(err.strip().splitlines()) == 1 and "no finished run" in err and "measured latency" in err
    assert "--set bench.after_run=true" in err and "lowrank bench model RUN" in err
    code, out, _ = lowrank("compare", "show", "last", "--no-plot")
    assert code == 0 and "latency ms" not in out and "img/s" not in out  # no columns without a latency


def test_unknown_x_is_refused_in_one_line(lowrank):
    write_sweep(lowrank.home, ONE_DEVICE)
    code, out, err = lowrank("compare", "show", "last", "--x", "params,speed")
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert "--x" in err and "unknown x axis 'speed'" in err and "throughput" in err


# ---------------------------------------------------------------- one real sweep


@pytest.mark.slow
@pytest.mark.subprocess
def test_a_real_sweep_plots_its_measured_latency(home, monkeypatch):
    """Two CPU quickstart runs with the real worker: compare records their latency (bench.after_run is
    pinned on for sweeps) and ``show --x latency --json`` gives exactly what each run measured."""
    env = {**os.environ, "LOWRANK_HOME": str(home), "LOWRANK_SCHEDULER_POLL": "0.1", "LOWRANK_MAX_CPU_RUNS": "2"}
    env.pop("LOWRANK_WORKER", None)

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-c", "from console.cli import main; main()", *args], cwd=REPO,
                              capture_output=True, text=True, timeout=180, env=env)

    ran = cli("compare", "presets/quickstart.yaml", "--methods", "dense,separable", "--seeds", "1",
              "--set", "train.epochs=1", "--cpu", "--json")
    assert ran.returncode == 0, ran.stderr[-2000:]
    shown = cli("compare", "show", "last", "--x", "latency", "--json")
    assert shown.returncode == 0, shown.stderr
    data = json.loads(shown.stdout)
    statuses = [RunDir(runs_root(home) / run["run_id"]).read_status() for run in data["runs"]]
    assert all(status["state"] == "finished" and status["latency_ms_b1"] > 0 for status in statuses)
    assert data["latency_device"] == statuses[0]["latency_device"] + f" x{statuses[0]['latency_threads']} threads"
    assert sorted(row["latency_ms_b1_mean"] for row in data["rows"]) == sorted(
        status["latency_ms_b1"] for status in statuses)
