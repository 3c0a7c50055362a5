"""TensorBoard: ``log.tensorboard: true`` writes event files live, ``lowrank export tensorboard``
converts existing runs; both read back with TensorBoard's own reader. Off by default, and then
the worker does not import torch.utils.tensorboard."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lowrank.config import load
from lowrank.rundir import RunDir
from lowrank.tensorboard import scalars

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
TINY = ["model.name=tiny_convnet", "model.kwargs.width=8", "data.name=synthetic", "data.batch_size=16",
        "data.kwargs={num_classes: 4, channels: 1, image_size: 8, num_train: 64, num_val: 32, num_test: 32}",
        "train.epochs=2", "train.device=cpu", "log.step_every=1"]


def make_run(overrides=()):
    return RunDir.create(load(REPO / "presets" / "quickstart.yaml", TINY + list(overrides)).to_dict())


def read_back(folder: Path) -> dict[str, list[tuple[int, float]]]:
    events = EventAccumulator(str(folder))
    events.Reload()
    return {tag: [(event.step, event.value) for event in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def metrics_view(run: RunDir) -> dict[str, list[tuple[int, float]]]:
    out: dict[str, list] = {}
    for record in run.read_metrics():
        for tag, value, step in scalars(record):
            out.setdefault(tag, []).append((step, value))
    return out


def test_scalars_of_each_event_kind():
    assert scalars({"event": "step", "epoch": 1, "step": 7, "batch": 3, "batches": 4, "loss": 1.5, "err1": 50,
                    "lr": 0.1, "throughput": None, "stage": "block", "time": 1.0}) == [
        ("step/loss", 1.5, 7), ("step/err1", 50.0, 7), ("step/lr", 0.1, 7)]
    assert scalars({"event": "eval", "epoch": 2, "split": "val", "err1": 9.5, "loss": float("nan")}) == [
        ("val/err1", 9.5, 2)]
    assert scalars({"event": "epoch", "epoch": 2, "kd": 0.3})[0] == ("train/kd", 0.3, 2)
    assert scalars({"event": "end", "state": "finished", "test_err1": 3.0}) == []
    assert scalars({"event": "step", "step": "x", "loss": 1.0}) == []


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_live_logging_reads_back_equal_to_the_metrics(home):
    from lowrank.train import main

    run = make_run(["log.tensorboard=true"])
    assert main([str(run.path)]) == 0  # in-process: the sink flushes at every epoch, eval and test event
    logged = read_back(run.file("tensorboard"))
    expected = metrics_view(run)
    assert {"step/loss", "step/lr", "train/loss", "val/err1", "test/err1"} <= set(logged)
    for tag, points in expected.items():
        assert [step for step, _ in logged[tag]] == [step for step, _ in points], tag
        assert [value for _, value in logged[tag]] == pytest.approx([value for _, value in points],
                                                                    rel=1e-6, abs=1e-7), tag  # float32 on disk


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.subprocess
def test_off_by_default_and_not_imported(home):
    run = make_run()
    code = ("import sys; from lowrank.train.worker import main; rc = main([sys.argv[1]]); "
            "sys.exit(10 + rc if 'torch.utils.tensorboard' in sys.modules else rc)")
    done = subprocess.run([sys.executable, "-c", code, str(run.path)], capture_output=True, text=True, timeout=840)
    assert done.returncode == 0, done.stderr  # 10: it imported torch.utils.tensorboard
    assert not run.file("tensorboard").exists()


def test_export_converts_existing_runs_and_does_not_double(home):
    from console.cli import app

    run = RunDir.create({"name": "old", "train": {"epochs": 2}}, home=home)
    for epoch in (1, 2):
        for batch in (1, 2):
            run.append_metric({"event": "step", "epoch": epoch, "step": 2 * (epoch - 1) + batch, "batch": batch,
                               "batches": 2, "loss": 2.0 / (epoch + batch), "err1": 50.0 - epoch})
        run.append_metric({"event": "eval", "epoch": epoch, "split": "val", "err1": 40.0 - epoch, "loss": 1.0})
    for _ in range(2):
        out = CliRunner().invoke(app, ["export", "tensorboard", "last"])
        assert out.exit_code == 0, out.output
    assert "12 scalars" in out.output  # 4 steps x (loss, err1) + 2 evals x (err1, loss) and "tensorboard --logdir" in out.output
    logged = read_back(run.file("tensorboard"))
    assert logged["val/err1"] == [(1, 39.0), (2, 38.0)]
    assert [step for step, _ in logged["step/loss"]] == [1, 2, 3, 4]
    assert len(list(run.file("tensorboard").iterdir())) == 1
