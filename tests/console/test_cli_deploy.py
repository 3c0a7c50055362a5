"""``lowrank bench model`` and ``lowrank export`` through the real entry point: what they print, and
bad values refused in one line (exit 2) before anything is created."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lowrank.config import load
from lowrank.deploy.export import missing_packages
from lowrank.rundir import RunDir

REPO = Path(__file__).resolve().parents[2]
QUICK = str(REPO / "presets" / "quickstart.yaml")
needs_onnx = pytest.mark.skipif(bool(missing_packages("onnx")), reason="the export extra is not installed")


def _tree(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*")) if path.exists() else []


@pytest.fixture
def trained(lowrank, monkeypatch, capsys):
    """A finished 1-epoch quickstart run in the ``lowrank`` fixture's home."""
    from lowrank.train import main

    monkeypatch.setenv("LOWRANK_HOME", str(lowrank.home))
    run = RunDir.create(load(QUICK, ["train.epochs=1"]).to_dict(), home=lowrank.home)
    assert main([str(run.path)]) == 0
    capsys.readouterr()  # the worker's own lines are not the command's output
    return run


def test_bench_model_of_a_preset_prints_measured_beside_declared_ratios(lowrank):
    code, out, err = lowrank("bench", "model", QUICK, "--batch", "1,4", "--repeat", "2", "--min-seconds", "0", "--threads", "1")
    assert code == 0, err
    assert "time x dense" in out and "declared: params 11,018 vs 75,114" in out
    assert "where the time goes" in out and "stage1.0" in out and "(outside these modules)" in out
    rows = [line.split() for line in out.splitlines() if line.strip().startswith("1 ") and "eager" in line]
    assert [row[1] for row in rows] == ["1", "4"]


def test_bench_model_json_and_csv(lowrank):
    code, out, _ = lowrank("bench", "model", QUICK, "--batch", "2", "--repeat", "2", "--min-seconds", "0", "--threads", "1", "--json")
    assert code == 0
    result = json.loads(out)
    assert result["source"] == {"kind": "preset", "name": QUICK}
    assert result["subject"]["params"] == 11018 and result["reference"]["params"] == 75114
    assert [(r["threads"], r["batch"], r["mode"]) for r in result["rows"]] == [(1, 2, "eager")]
    code, out, _ = lowrank("bench", "model", QUICK, "--batch", "2", "--repeat", "2", "--min-seconds", "0", "--threads", "1", "--csv")
    header, row = out.strip().splitlines()
    assert header.startswith("source,network,device_name") and ",eager," in row


@pytest.mark.slow
@pytest.mark.subprocess
def test_bench_model_of_a_run_uses_the_run(lowrank, trained):
    code, out, err = lowrank("bench", "model", trained.run_id, "--batch", "1", "--repeat", "2", "--min-seconds", "0", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["source"] == {"kind": "run", "name": trained.run_id}
    assert result["subject"]["weights"].endswith("best.pt")


@pytest.mark.parametrize("args, key", [
    (["--threads", "0"], "--threads"),
    (["--threads", "two"], "--threads"),
    (["--batch", "0"], "--batch"),
    (["--batch", "x"], "--batch"),
    (["--mode", "jit"], "--mode"),
    (["--mode", ","], "--mode"),
    (["--dtype", "int8"], "--dtype"),
    (["--device", "tpu"], "--device"),
    (["--repeat", "0"], "--repeat"),
    (["--depth", "0"], "--depth"),
    (["--min-seconds", "-1"], "--min-seconds"),
    (["--json", "--csv"], "--csv"),
    (["--set", "train.epochs=0"], "train.epochs"),
])
def test_bench_model_bad_values_are_one_line_exit_2(lowrank, args, key):
    code, out, err = lowrank("bench", "model", QUICK, *args)
    assert code == 2 and out == ""
    assert key in err and err.count("\n") == 1 and err.startswith("error: ")
    assert _tree(lowrank.home) == []


@pytest.mark.slow
@pytest.mark.subprocess
def test_bench_model_refuses_set_on_a_run_and_an_unknown_source(lowrank, trained):
    before = _tree(lowrank.home)
    code, _, err = lowrank("bench", "model", trained.run_id, "--set", "train.epochs=3")
    assert code == 2 and "--set" in err and err.count("\n") == 1
    code, _, err = lowrank("bench", "model", "no-such-run")
    assert code == 2 and "no run matches" in err and err.count("\n") == 1
    code, _, err = lowrank("bench", "model", "missing.yaml")
    assert code == 2 and "missing.yaml" in err and err.count("\n") == 1
    assert _tree(lowrank.home) == before


@needs_onnx
@pytest.mark.slow
def test_bench_model_onnx_mode_times_onnx_runtime(lowrank):
    code, out, err = lowrank("bench", "model", QUICK, "--batch", "1", "--repeat", "2", "--min-seconds", "0", "--threads", "1",
                             "--mode", "eager,onnx", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert [row["mode"] for row in result["rows"]] == ["eager", "onnx"]
    assert result["environment"]["onnxruntime"]


@needs_onnx
@pytest.mark.slow
@pytest.mark.subprocess
def test_export_a_run_to_onnx_checks_it_on_the_runs_test_images(lowrank, trained):
    code, out, err = lowrank("export", trained.run_id)
    assert code == 0, err
    path = trained.path / "export" / "model.onnx"
    assert path.is_file() and f"-> {path}" in out
    assert "the first 64 test images of digits" in out and "passed" in out
    assert "11,018 parameters" in out and "dense 75,114" in out
    code, out, _ = lowrank("export", trained.run_id, "--format", "pt2", "--json")
    facts = json.loads(out)
    assert code == 0 and facts["passed"] and facts["format"] == "pt2" and Path(facts["path"]).is_file()
    assert facts["relative_diff"] <= facts["tolerance"] == 1e-4 and facts["check_batch"] == 64


@pytest.mark.slow
def test_export_pt2_to_an_explicit_file_refuses_to_replace_one_without_force(lowrank, trained, tmp_path):
    out_file = tmp_path / "net.pt2"
    out_file.write_text("keep me")
    code, _, err = lowrank("export", trained.run_id, "--format", "pt2", "--out", str(out_file))
    assert code == 2 and "--force" in err and out_file.read_text() == "keep me"
    code, _, err = lowrank("export", trained.run_id, "--format", "pt2", "--out", str(out_file), "--force")
    assert code == 0, err
    import torch

    assert torch.export.load(str(out_file)).module()(torch.zeros(3, 1, 8, 8)).shape == (3, 10)


@pytest.mark.parametrize("args, key", [
    (["--format", "tflite"], "--format"),
    (["--inputs", "mine"], "--inputs"),
    (["--check-batch", "0"], "--check-batch"),
])
@pytest.mark.slow
@pytest.mark.subprocess
def test_export_bad_values_are_refused_before_anything_is_written(lowrank, trained, args, key):
    before = _tree(lowrank.home)
    code, out, err = lowrank("export", trained.run_id, *args)
    assert code == 2 and key in err and err.count("\n") == 1 and err.startswith("error: ")
    assert _tree(lowrank.home) == before


@pytest.mark.slow
def test_export_without_the_extra_names_the_install_line_and_writes_nothing(lowrank, trained, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime" else real(name, *a))
    before = _tree(lowrank.home)
    code, out, err = lowrank("export", trained.run_id, "--format", "onnx")
    assert code == 2 and err.count("\n") == 1
    assert "onnxruntime" in err and "pip install 'lowrank[export]'" in err
    assert _tree(lowrank.home) == before
    code, _, err = lowrank("bench", "model", QUICK, "--mode", "onnx")
    assert code == 2 and "pip install 'lowrank[export]'" in err


@pytest.mark.slow
@pytest.mark.subprocess
def test_export_tensorboard_keeps_its_form(lowrank, trained):
    code, out, err = lowrank("export", "tensorboard", trained.run_id)
    assert code == 0, err
    assert "scalars ->" in out and (trained.path / "tensorboard").is_dir()
