"""Writes cannot be redirected: unpredictable temp files, appends that refuse symlinks,
and a symlinked run directory keeps its results row in its own LOWRANK_HOME."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from lowrank.config import load
from lowrank.rundir import RunDir, append_result, atomic_replace, atomic_write_text
from lowrank.train import atomic_save, main

REPO = Path(__file__).resolve().parents[2]
TINY = ["model.name=tiny_convnet", "model.kwargs.width=8", "data.name=synthetic", "data.batch_size=16",
        "data.workers=0", "substitute.method=dense",
        "data.kwargs={num_classes: 4, channels: 1, image_size: 8, num_train: 32, num_val: 16, num_test: 16}",
        "train.device=cpu", "train.epochs=1"]


@pytest.fixture
def victim(tmp_path):
    path = tmp_path / "victim.txt"
    path.write_text("precious\n")
    return path


@pytest.mark.parametrize("name", ["checkpoint.pt", "best.pt"])
def test_checkpoint_save_does_not_follow_a_planted_temp_symlink(tmp_path, victim, name):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    for planted in (f".{name}.tmp", f".{name}.tmp.tmp", f"{name}.tmp"):  # every name the old code used
        os.symlink(victim, run_dir / planted)
    atomic_save({"model": {"w": torch.ones(2)}}, run_dir / name)
    assert victim.read_text() == "precious\n"
    assert torch.load(run_dir / name, weights_only=True)["model"]["w"].tolist() == [1.0, 1.0]
    assert sorted(p.name for p in run_dir.iterdir() if not p.is_symlink()) == [name]  # no temp left behind


def test_atomic_writes_use_fresh_names_and_leave_nothing_on_error(tmp_path, victim):
    target = tmp_path / "status.json"
    atomic_write_text(target, "old")
    with pytest.raises(RuntimeError):
        with atomic_replace(target, "w") as handle:
            handle.write("half")
            raise RuntimeError("killed mid-write")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["status.json", "victim.txt"]


def test_metrics_append_refuses_a_symlink(home, victim):
    config = load(REPO / "presets" / "quickstart.yaml", TINY)
    run = RunDir.create(config.to_dict(), home=home)
    os.symlink(victim, run.file("metrics.jsonl"))
    with pytest.raises(OSError):
        run.append_metric({"event": "x"})
    assert victim.read_text() == "precious\n"


def test_results_append_refuses_a_symlink(tmp_path, victim):
    home = tmp_path / "home"
    home.mkdir()
    os.symlink(victim, home / "results.csv")
    with pytest.raises(OSError):
        append_result({"run_id": "x"}, home=home)
    assert victim.read_text() == "precious\n"


def test_lock_files_refuse_a_symlink(tmp_path, victim):
    from lowrank.rundir import file_lock

    os.symlink(victim, tmp_path / ".status.lock")
    with pytest.raises(OSError):
        with file_lock(tmp_path / ".status.lock"):
            pass


def test_a_symlinked_run_directory_writes_results_to_its_own_home(home, tmp_path):
    """runs/<id> -> /elsewhere/a/b/<id>: the row goes to $LOWRANK_HOME/results.csv, not /elsewhere/a."""
    config = load(REPO / "presets" / "quickstart.yaml", TINY)
    elsewhere = tmp_path / "elsewhere"
    real = RunDir.create(config.to_dict(), home=elsewhere)
    (home / "runs").mkdir(parents=True)
    link = home / "runs" / real.run_id
    os.symlink(real.path, link)
    assert main([str(link)]) == 0
    assert (home / "results.csv").exists()
    assert not (elsewhere / "results.csv").exists()
    assert real.run_id in (home / "results.csv").read_text()
