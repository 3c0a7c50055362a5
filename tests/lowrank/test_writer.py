"""The background checkpoint writer (lowrank.train.writer): in order, errors surface at wait(),
and training goes on while a checkpoint is written."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import torch

from lowrank.config import load
from lowrank.rundir import RunDir
from lowrank.train import main
from lowrank.train.writer import CheckpointWriter, serialize, write_atomically

REPO = Path(__file__).resolve().parents[2]


def test_tasks_run_in_order_off_the_calling_thread_and_errors_surface_at_wait(tmp_path):
    writer, seen = CheckpointWriter(), []
    for index in range(5):
        writer.submit(lambda index=index: seen.append((index, threading.current_thread().name)))
    writer.wait()
    assert [index for index, _ in seen] == list(range(5))
    assert all(name != threading.current_thread().name for _, name in seen)
    data = serialize({"w": torch.arange(4.0)})
    writer.submit(lambda: write_atomically(data, tmp_path / "c.pt"))
    writer.submit(lambda: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        writer.wait()
    assert torch.equal(torch.load(tmp_path / "c.pt", weights_only=True)["w"], torch.arange(4.0))
    writer.submit(lambda: 1 / 0)
    writer.close()  # after an error being raised elsewhere: finishes, does not raise over it


def test_a_failed_write_fails_the_next_submit_and_one_write_is_in_flight_at_a_time():
    """A write that failed is raised at the next checkpoint (not at the end of a run that went on
    without checkpoints), and a checkpoint is queued only once the one before it is written."""
    writer, release, running = CheckpointWriter(), threading.Event(), []

    def slow() -> None:
        running.append("slow")
        assert release.wait(timeout=60)

    writer.submit(slow)
    threading.Timer(0.2, release.set).start()
    writer.submit(lambda: running.append("next"))  # returns once `slow` is done
    assert release.is_set() and running[0] == "slow"
    writer.wait()
    assert running == ["slow", "next"]
    writer.submit(lambda: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        writer.submit(lambda: running.append("never"))
    writer.close()
    assert "never" not in running


def test_serialize_snapshots_the_tensors_as_they_are_at_the_call():
    weight = torch.zeros(3)
    data = serialize({"w": weight})
    weight += 1  # training goes on after the checkpoint was taken
    import io

    assert torch.equal(torch.load(io.BytesIO(bytes(data)), weights_only=True)["w"], torch.zeros(3))


def test_training_goes_on_while_a_checkpoint_is_written(home, monkeypatch):
    """The epoch-1 checkpoint's write is held until epoch 2 has been trained: with a write in
    the training thread that could never happen (the test would time out waiting)."""
    import lowrank.train.loop as loop

    second_epoch_logged, overlapped = threading.Event(), []
    real_write, real_append = loop.write_atomically, RunDir.append_metric

    def slow_write(data, path, sync_dir=True):
        if path.name == "checkpoint.pt" and not overlapped:
            overlapped.append(second_epoch_logged.wait(timeout=60))
        return real_write(data, path, sync_dir)

    def append(self, record, sync=None):
        real_append(self, record, sync)
        if record.get("event") == "epoch" and record.get("epoch") == 2:
            second_epoch_logged.set()

    monkeypatch.setattr(loop, "write_atomically", slow_write)
    monkeypatch.setattr(RunDir, "append_metric", append)
    config = load(REPO / "presets" / "quickstart.yaml", [
        "data.name=synthetic", "data.batch_size=16", "model.kwargs.width=8", "train.epochs=2", "train.device=cpu",
        "log.checkpoint_every=1",
        "data.kwargs={num_classes: 4, channels: 1, image_size: 8, num_train: 32, num_val: 16, num_test: 16}"])
    run = RunDir.create(config.to_dict(), home=home)
    assert main([str(run.path)]) == 0
    assert overlapped == [True]
    state = torch.load(run.file("checkpoint.pt"), weights_only=True)
    assert state["epoch"] == 2 and run.read_status()["state"] == "finished"
