"""Budget-matched sweeps: the plan (solved hp checked against real substituted networks),
refusal of unreachable budgets, manifests and launch through the queue (fake worker),
resume decisions, aggregation, plots and the ``lowrank compare`` command shape.

The end-to-end sweep with the real worker is in test_compare_e2e.py.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from torch.utils.flop_counter import FlopCounterMode
from typer.testing import CliRunner

from lowrank.errors import UserError
from lowrank.methods import get_method
from lowrank.models import create_model
from lowrank.rundir import RunDir, runs_root
from lowrank.substitute import substitute

from console import compare
from console.cli import app
from fake_worker import wait_for

REPO = Path(__file__).resolve().parents[2]
runner = CliRunner()
WIDTH = 32  # wide enough that integer ranks give sub-1% budget steps
METHODS = ["generic", "tt", "sep_hashed"]
BUDGETS = [0.05, 0.1]


def write_preset(tmp_path: Path, width: int = WIDTH, **train) -> Path:
    """A tiny_convnet on 8x8 synthetic images (CPU)."""
    preset = {"name": "tiny", "model": {"name": "tiny_convnet", "kwargs": {"width": width}},
              "data": {"name": "synthetic", "batch_size": 16,
                       "kwargs": {"image_size": 8, "num_train": 64, "num_val": 32, "num_test": 32}},
              "train": {"epochs": 1, "device": "cpu", **train}}
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(preset))
    return path


def network(method: str, hp, width: int = WIDTH) -> torch.nn.Module:
    model = create_model("tiny_convnet", num_classes=10, in_channels=3, width=width)
    substitute(model, method, hp)
    return model


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())  # parameters() yields shared tensors once


def flop_macs(model: torch.nn.Module) -> int:
    with FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, 3, 8, 8))
    return counter.get_total_flops() // 2


# ---------------------------------------------------------------- the plan


def test_plan_solves_each_budget_against_real_networks(tmp_path):
    plan = compare.plan_sweep(write_preset(tmp_path), METHODS, BUDGETS, seeds=2)
    dense = create_model("tiny_convnet", num_classes=10, in_channels=3, width=WIDTH)
    assert plan.dense_params == n_params(dense) and plan.dense_macs == flop_macs(dense)
    assert [(e.method, e.budget, e.seed) for e in plan.entries] == [
        (m, b, s) for m in METHODS for b in BUDGETS for s in (0, 1)]
    assert not plan.problems and not plan.notes
    for entry in plan.entries:
        built = network(entry.method, entry.hp)
        target = round(entry.budget * plan.dense_params)
        assert entry.params == n_params(built), entry  # the plan's count is the real network's
        assert entry.target == target and entry.gap == pytest.approx((entry.params - target) / target)
        assert abs(entry.gap) < 0.01, entry  # continuous hp: within 1% of the budget
        get_method(entry.method).hp.validate(entry.hp)
        assert entry.hp_name == get_method(entry.method).hp.name
        # the run's config pins the solved hp (budget cleared: they are exclusive) and the seed
        sub = entry.config["substitute"]
        assert (sub["method"], sub["hp"], sub["budget"]) == (entry.method, entry.hp, None)
        assert entry.config["train"]["seed"] == entry.seed and entry.config["name"] == entry.name
    generic = next(e for e in plan.entries if e.method == "generic")
    assert generic.macs == flop_macs(network("generic", generic.hp))  # plain convs: torch's counter agrees
    # more budget, more parameters, larger hp
    for method in METHODS:
        small, large = (next(e for e in plan.entries if e.method == method and e.budget == b) for b in BUDGETS)
        assert small.params < large.params and small.hp < large.hp


def test_unreachable_budget_is_a_per_entry_problem_with_the_range(tmp_path):
    plan = compare.plan_sweep(write_preset(tmp_path), ["generic", "tt"], [0.02, 0.1])
    problems = {(e.method, e.budget): e.problem for e in plan.problems}
    assert set(problems) == {("generic", 0.02), ("tt", 0.02)}
    hp = get_method("generic").hp
    low, high = n_params(network("generic", hp.low)), n_params(network("generic", hp.high))
    assert f"reaches {low:,} to {high:,} parameters" in problems[("generic", 0.02)]
    assert all(e.problem is None and e.hp is not None for e in plan.runnable)
    message = compare.unreachable_message(plan)
    assert "generic @ 0.02" in message and "tt @ 0.02" in message
    # refused as a whole: nothing created
    with pytest.raises(UserError, match="cannot be planned"):
        compare.launch_sweep(plan, {"gpus": 0}, home=tmp_path / "home")
    assert not (tmp_path / "home").exists()


def test_references_run_once_per_seed_whatever_the_budgets(tmp_path):
    plan = compare.plan_sweep(write_preset(tmp_path), ["separable", "generic"], BUDGETS, seeds=[3, 5])
    refs = [e for e in plan.entries if e.reference]
    assert [(e.method, e.budget, e.seed) for e in refs] == [("separable", None, 3), ("separable", None, 5)]
    assert refs[0].params == n_params(network("separable", None)) and refs[0].hp is None
    assert any("one reference run per seed" in note for note in plan.notes)
    assert len(plan.entries) == 2 + 2 * 2


def test_plan_input_errors_are_user_errors(tmp_path):
    preset = write_preset(tmp_path)
    with pytest.raises(UserError, match="unknown method 'nope'"):
        compare.plan_sweep(preset, ["nope"], BUDGETS)
    with pytest.raises(UserError, match="not a fraction"):
        compare.plan_sweep(preset, ["generic"], [1.5])
    with pytest.raises(UserError, match="need"):
        compare.plan_sweep(preset, ["generic"], [])
    with pytest.raises(UserError, match="train.nope"):
        compare.plan_sweep(preset, ["generic"], BUDGETS, overrides=["train.nope=1"])


def test_options_of_other_methods_are_dropped_with_a_note(tmp_path):
    plan = compare.plan_sweep(write_preset(tmp_path), ["tt", "generic"], [0.1], overrides=["substitute.method=tt",
                                                                                           "substitute.hp=0.5",
                                                                                           "substitute.options.dims=2"])
    tt, generic = plan.entries
    assert tt.config["substitute"]["options"] == {"dims": 2} and generic.config["substitute"]["options"] == {}
    assert any(note.startswith("generic: the preset's substitute.options") for note in plan.notes)


# ---------------------------------------------------------------- launch, manifest, resume (fake worker)


@pytest.fixture
def fake(fake, monkeypatch):
    """The shared fake-worker home (tests/console/conftest.py), 4 CPU run(s) at a time."""
    monkeypatch.setenv("LOWRANK_MAX_CPU_RUNS", "4")
    return fake


def wait_done(sweep_id: str, timeout: float = 60.0) -> list[dict]:
    return wait_for(lambda: (rows := compare.progress(compare.read_manifest(sweep_id))) and compare.is_done(rows)
                    and rows, timeout, 0.1, f"sweep {sweep_id} to end")


@pytest.mark.subprocess
def test_skip_unreachable_launches_the_rest_through_the_queue(fake, tmp_path):
    plan = compare.plan_sweep(write_preset(tmp_path), ["generic", "separable"], [0.02, 0.1])
    manifest = compare.launch_sweep(plan, {"gpus": 0}, skip_unreachable=True)
    sweep_id = manifest["sweep"]
    assert sweep_id.startswith("sweep-") and compare.resolve_sweep(sweep_id[-4:]) == sweep_id
    on_disk = json.loads(compare.manifest_path(sweep_id).read_text())
    assert on_disk["preset"] == str(tmp_path / "tiny.yaml") and on_disk["budgets"] == [0.02, 0.1]
    launched = [e for e in on_disk["entries"] if e["run_id"]]
    assert [(e["method"], e["budget"]) for e in launched] == [("generic", 0.1), ("separable", None)]
    assert [e["run_id"] for e in on_disk["entries"] if e["problem"]] == [None]
    rows = wait_done(sweep_id)
    assert [row["state"] for row in rows] == ["skipped", "finished", "finished"]
    for entry in launched:
        run = RunDir(runs_root() / entry["run_id"])
        status = run.read_status()
        assert (status["sweep"], status["sweep_method"], status["sweep_budget"], status["sweep_seed"]) == (
            sweep_id, entry["method"], entry["budget"], 0)
        assert status["requirement"]["gpus"] == 0
        assert run.read_config()["substitute"]["hp"] == entry["hp"]
    listed = compare.list_sweeps()
    assert [(s["sweep"], s["states"]) for s in listed] == [(sweep_id, {"finished": 2, "skipped": 1})]


@pytest.mark.subprocess
def test_resume_relaunches_only_unfinished_and_recreates_vanished(fake, tmp_path):
    plan = compare.plan_sweep(write_preset(tmp_path), ["generic", "tt", "sep_hashed"], [0.1])
    sweep_id = compare.launch_sweep(plan, {"gpus": 0})["sweep"]
    wait_done(sweep_id)
    ids = [e["run_id"] for e in compare.read_manifest(sweep_id)["entries"]]
    RunDir(runs_root() / ids[0]).update_status(state="failed", error="simulated crash")
    shutil.rmtree(runs_root() / ids[2])
    actions = compare.resume_sweep(sweep_id)
    assert [(a["method"], a["state"], a["action"]) for a in actions] == [
        ("generic", "failed", "relaunched"), ("tt", "finished", "kept"), ("sep_hashed", "vanished", "relaunched")]
    manifest = compare.read_manifest(sweep_id)
    new = [e["run_id"] for e in manifest["entries"]]
    assert new[1] == ids[1] and new[0] != ids[0] and new[2] != ids[2]
    assert manifest["entries"][0]["history"] == [ids[0]] and manifest["entries"][2]["history"] == [ids[2]]
    rows = wait_done(sweep_id)
    assert [row["state"] for row in rows] == ["finished"] * 3
    relaunched = RunDir(runs_root() / new[0]).read_status()
    assert relaunched["relaunched_from"] == ids[0] and relaunched["sweep_budget"] == 0.1
    assert RunDir(runs_root() / new[2]).read_config() == plan.entries[2].config
    assert [a["action"] for a in compare.resume_sweep(sweep_id)] == ["kept"] * 3  # nothing left to do


# ---------------------------------------------------------------- aggregation and plots


def rows_for(errors: dict[tuple[str, float | None], list[float | None]]) -> list[dict]:
    """Per-run rows as run_rows makes them (None error = a run that did not finish)."""
    rows = []
    for (method, budget), values in errors.items():
        for seed, value in enumerate(values):
            done = value is not None
            rows.append({"method": method, "budget": budget, "seed": seed, "reference": budget is None,
                         "hp": 0.5, "params": 1000 if budget is None else int(10000 * budget), "macs": 5000,
                         "dense_params": 10000, "state": "finished" if done else "killed",
                         "final_val_err1": value, "best_val_err1": None if value is None else value - 1,
                         "test_err1": value, "train_seconds": 2.0 if done else None})
    return rows


def test_summarize_means_and_sample_std_over_finished_seeds():
    rows = rows_for({("tt", 0.1): [10.0, 12.0, 17.0], ("generic", 0.05): [20.0, None], ("generic", 0.1): [9.0],
                     ("separable", None): [8.0, 9.0]})
    summary = compare.summarize(rows, ["generic", "tt", "separable"])
    assert [(r["method"], r["budget"]) for r in summary] == [
        ("generic", 0.05), ("generic", 0.1), ("tt", 0.1), ("separable", None)]
    tt = summary[2]
    assert tt["test_err1_mean"] == pytest.approx(13.0)
    assert tt["test_err1_std"] == pytest.approx(statistics.stdev([10.0, 12.0, 17.0]))
    assert tt["best_val_err1_mean"] == pytest.approx(12.0) and (tt["finished"], tt["runs"]) == (3, 3)
    half = summary[0]
    assert (half["finished"], half["runs"], half["states"]) == (1, 2, {"finished": 1, "killed": 1})
    assert half["test_err1_mean"] == 20.0 and half["test_err1_std"] is None
    assert summary[3]["reference"] and summary[3]["params_fraction"] == pytest.approx(0.1)
    assert compare.fmt_mean_std(13.0, 3.605551) == "13.00 ± 3.61" and compare.fmt_mean_std(None, None) == "-"


def test_render_plots_has_both_axes_and_every_method():
    summary = compare.summarize(rows_for({("tt", 0.05): [20.0], ("tt", 0.1): [12.0], ("generic", 0.1): [15.0]}))
    text = compare.render_plots(summary, width=90, height=15, color=False)
    assert "vs parameters (log scale)" in text and "vs mult-adds (log scale)" in text
    assert "tt" in text and "generic" in text and "\x1b[" not in text
    assert compare.render_plots(compare.summarize(rows_for({("tt", 0.1): [None]})), color=False) == ""


def test_png_without_matplotlib_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` fail
    summary = compare.summarize(rows_for({("tt", 0.05): [20.0], ("tt", 0.1): [12.0]}))
    with pytest.raises(UserError, match=r"pip install 'lowrank\[plot\]'"):
        compare.save_png(summary, tmp_path / "plot.png")
    assert not (tmp_path / "plot.png").exists()


def test_png_is_written_with_matplotlib(tmp_path):
    pytest.importorskip("matplotlib")  # in the test extra, so CI always runs this
    summary = compare.summarize(rows_for({("tt", 0.05): [20.0], ("tt", 0.1): [12.0], ("generic", 0.1): [15.0]}))
    path = compare.save_png(summary, tmp_path / "plot.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000


# ---------------------------------------------------------------- the command's shape


def test_bare_preset_and_run_subcommand_are_the_same_dry_run(home, tmp_path):
    preset = str(write_preset(tmp_path))
    args = [preset, "--methods", "generic,tt", "--budgets", "0.05,0.1", "--seeds", "2", "--dry-run", "--json"]
    bare, explicit = runner.invoke(app, ["compare", *args]), runner.invoke(app, ["compare", "run", *args])
    assert bare.exit_code == 0 and explicit.exit_code == 0, bare.output + explicit.output
    assert json.loads(bare.stdout)["entries"] == json.loads(explicit.stdout)["entries"]
    assert len(json.loads(bare.stdout)["entries"]) == 8
    assert not home.exists()  # a dry run creates nothing
    table = runner.invoke(app, ["compare", preset, "-m", "generic", "-b", "0.02,0.1", "--dry-run"])
    assert table.exit_code == 0 and "unreachable" in table.stdout and "generic @ 0.02" in table.stdout


def cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    import os

    return subprocess.run([sys.executable, "-c", "from console.cli import main; main()", *args],
                          capture_output=True, text=True, cwd=REPO, timeout=120, env={**os.environ, **(env or {})})


@pytest.mark.slow
@pytest.mark.subprocess
def test_unreachable_refuses_without_traceback_and_creates_nothing(home, tmp_path):
    out = cli("compare", str(write_preset(tmp_path)), "--methods", "generic", "--budgets", "0.02,0.1", "--cpu")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "cannot reach" in out.stderr and "--skip-unreachable" in out.stderr
    assert "reaches" in out.stdout  # the plan, with the range, was printed first
    assert not runs_root(home).exists()
    missing = cli("compare", "show", "nothing-here")
    assert missing.returncode == 2 and "no sweep matches" in missing.stderr


@pytest.mark.subprocess
def test_show_csv_and_json_of_a_sweep(fake, tmp_path):
    plan = compare.plan_sweep(write_preset(tmp_path), ["generic", "tt"], [0.1])
    sweep_id = compare.launch_sweep(plan, {"gpus": 0})["sweep"]
    wait_done(sweep_id)
    as_json = json.loads(runner.invoke(app, ["compare", "show", sweep_id, "--json"]).stdout)
    assert [(r["method"], r["budget"], r["finished"]) for r in as_json["rows"]] == [("generic", 0.1, 1), ("tt", 0.1, 1)]
    assert [r["params"] for r in as_json["rows"]] == [e.params for e in plan.entries]
    table = list(csv.DictReader(io.StringIO(runner.invoke(app, ["compare", "show", sweep_id[:12], "--csv"]).stdout)))
    assert [row["method"] for row in table] == ["generic", "tt"] and table[0]["budget"] == "0.1"
    listed = runner.invoke(app, ["compare", "ls", "--json"])
    assert json.loads(listed.stdout)[0]["sweep"] == sweep_id
    # the stand-in worker reports no error figures: a PNG would be empty, so it is refused
    png = runner.invoke(app, ["compare", "show", sweep_id, "--png", str(tmp_path / "p.png"), "--no-plot"])
    assert isinstance(png.exception, UserError) and "nothing to plot" in str(png.exception)
    assert not (tmp_path / "p.png").exists()


@pytest.mark.slow
@pytest.mark.subprocess
def test_ctrl_c_stops_watching_and_leaves_the_runs_going(fake, tmp_path):
    import os
    import signal

    from console.launch import kill_run

    proc = subprocess.Popen([sys.executable, "-c", "from console.cli import main; main()", "compare",
                             str(write_preset(tmp_path)), "-m", "generic,tt", "-b", "0.1", "--cpu",
                             "--set", "train.epochs=500"], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=dict(os.environ))
    try:
        sweep_id = wait_for(lambda: compare.sweep_ids() and compare.sweep_ids()[0], 60, 0.05, "the sweep")
        wait_for(lambda: any(r["state"] == "running" for r in compare.progress(compare.read_manifest(sweep_id))),
                 60, 0.05, "a run to start")
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130 and "runs keep going" in err and f"lowrank compare resume {sweep_id}" in err
    assert "Traceback" not in err
    rows = compare.progress(compare.read_manifest(sweep_id))
    assert {row["state"] for row in rows} <= {"running", "queued"} and "running" in {row["state"] for row in rows}
    for entry in compare.read_manifest(sweep_id)["entries"]:
        kill_run(RunDir(runs_root() / entry["run_id"]), grace=5)


@pytest.mark.subprocess
def test_console_modules_do_not_import_torch():
    code = ("import sys, console.compare, console.commands.compare; "
            "sys.exit('torch' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO).returncode == 0
