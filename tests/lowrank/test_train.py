"""The training worker: exact resume, NaN detection, clean stop on signals, kill -9 safety."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from lowrank.config import load
from lowrank.rundir import RunDir, read_jsonl
from lowrank.train import StopRequested, main, train
from train_helpers import StopAfter, final_events

REPO = Path(__file__).resolve().parents[2]

TINY = [
    "model.name=tiny_convnet", "model.kwargs.width=8",
    "data.name=synthetic", "data.batch_size=16",
    "data.kwargs={num_classes: 4, channels: 1, image_size: 8, num_train: 128, num_val: 32, num_test: 32, noise: 2.0}",
    "data.augment.cutout=3", "data.augment.random_crop=true", "data.augment.crop_padding=1",
    "train.epochs=3", "train.lr=0.05", "train.device=cpu",
    "log.checkpoint_every=1", "log.step_every=2",
]


def make_run(overrides: list[str] = ()) -> RunDir:
    config = load(REPO / "presets" / "quickstart.yaml", TINY + list(overrides))
    return RunDir.create(config.to_dict())


def test_a_run_finishes_with_complete_directory(home):
    run = make_run()
    assert main([str(run.path)]) == 0
    status = run.read_status()
    assert status["state"] == "finished" and status["exit_code"] == 0 and status["epoch"] == 3
    assert status["params"] > 0 and status["macs"] > 0 and status["test_err1"] is not None
    events = [r["event"] for r in run.read_metrics()]
    assert events[0] == "start" and events[-1] == "end" and events.count("epoch") == 3
    for name in ("checkpoint.pt", "best.pt", "config.yaml"):
        assert run.file(name).exists()
    rows = (home / "results.csv").read_text().splitlines()
    assert len(rows) == 2 and run.run_id in rows[1]


def test_resume_after_interruption_matches_uninterrupted(home):
    reference = make_run()
    assert main([str(reference.path)]) == 0

    interrupted = make_run()
    # stop in the middle of epoch 2 (8 steps per epoch; epoch 1 completed and checkpointed)
    with pytest.raises(StopRequested):
        train(interrupted, resume=False, stop=StopAfter(12))
    assert main([str(interrupted.path), "--resume"]) == 0
    assert final_events(interrupted) == final_events(reference)
    assert interrupted.read_status()["test_err1"] == reference.read_status()["test_err1"]


def test_non_finite_loss_fails_with_epoch_and_step(home):
    run = make_run(["train.lr=1e12", "train.momentum=0.9", "train.weight_decay=0"])
    assert main([str(run.path)]) == 1
    status = run.read_status()
    assert status["state"] == "failed"
    assert "non-finite loss" in status["error"] and "epoch 1" in status["error"] and "step" in status["error"]
    assert run.read_metrics()[-1]["state"] == "failed"
    assert not (home / "results.csv").exists()  # failed runs add no result row


def start_worker(run: RunDir) -> subprocess.Popen:
    log = open(run.file("output.log"), "ab")
    return subprocess.Popen([sys.executable, "-m", "lowrank.train", str(run.path)], stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True, cwd=REPO)


def wait_for(predicate, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def steps_logged(run: RunDir) -> int:
    return sum(1 for r in run.read_metrics() if r.get("event") == "step")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
@pytest.mark.slow
@pytest.mark.subprocess
def test_signal_stops_the_worker_as_killed(home, signum):
    run = make_run(["train.epochs=200"])
    proc = start_worker(run)
    wait_for(lambda: steps_logged(run) >= 2)
    proc.send_signal(signum)
    assert proc.wait(30) == 128 + signum
    status = run.read_status()
    assert status["state"] == "killed" and status["exit_code"] == 128 + signum
    assert status["ended"] and signal.Signals(signum).name in status["error"]
    assert run.read_metrics()[-1] == {**run.read_metrics()[-1], "event": "end", "state": "killed"}


@pytest.mark.slow
@pytest.mark.subprocess
def test_kill_9_at_random_moments_leaves_a_readable_directory(home):
    rng = random.Random(1234)
    for _ in range(4):
        run = make_run(["train.epochs=200", "log.step_every=1"])
        proc = start_worker(run)
        wait_for(lambda: run.read_status().get("state") == "running")
        time.sleep(rng.uniform(0.0, 1.5))
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
        raw = run.file("metrics.jsonl").read_bytes() if run.file("metrics.jsonl").exists() else b""
        lines = raw.split(b"\n")  # lines[-1] is b"" or a torn tail without its newline
        for line in lines[:-1]:
            json.loads(line)  # every newline-terminated line is whole JSON
        assert read_jsonl(run.file("metrics.jsonl")) == [json.loads(line) for line in lines[:-1] if line]
        status = json.loads(run.file("status.json").read_text())
        assert status["state"] == "running"  # kill -9 cannot write a final state: the console reconciles it
        if run.file("checkpoint.pt").exists():  # renamed into place only when complete
            state = torch.load(run.file("checkpoint.pt"), weights_only=True)
            assert state["epoch"] >= 1 and "optimizer" in state and "rng" in state


def test_missing_run_directory_is_a_clear_error(tmp_path, capsys):
    assert main([str(tmp_path / "nowhere")]) == 2
    assert "not a run directory" in capsys.readouterr().err


@pytest.mark.slow
def test_quickstart_reaches_under_5_percent_test_error(home):
    config = load(REPO / "presets" / "quickstart.yaml", ["train.device=cpu"])
    run = RunDir.create(config.to_dict())
    assert main([str(run.path)]) == 0
    status = run.read_status()
    assert status["test_err1"] < 5.0, status
    assert status["method"] == "separable" and status["params"] < status["dense_params"]


# 3 setup checks, then 8 training steps and 2 validation batches per epoch (32 images, batch 16)
@pytest.mark.parametrize("checks", [5, 11, 13, 16, 25], ids=lambda n: f"after-{n}-checks")
@pytest.mark.subprocess
def test_stop_between_checkpoints_resumes_exactly(home, checks):
    """A stop anywhere (mid-epoch, in the epoch's evaluation) with no checkpoint since the last
    epoch: the stop writes one at that step, and the resumed run ends exactly as an uninterrupted
    one (augmentation draws in this process included). Before, a kill between periodic
    checkpoints could not resume from where it stopped ("no checkpoint" or back to the epoch)."""
    overrides = ["log.checkpoint_every=100"]  # only the last epoch checkpoints on its own
    reference = make_run(overrides)
    assert main([str(reference.path)]) == 0
    interrupted = make_run(overrides)
    with pytest.raises(StopRequested):
        train(interrupted, resume=False, stop=StopAfter(checks))
    saved = torch.load(interrupted.file("checkpoint.pt"), weights_only=True)
    assert saved["mid_epoch"] is not None  # the stop's own checkpoint, inside an epoch
    assert main([str(interrupted.path), "--resume"]) == 0
    assert final_events(interrupted) == final_events(reference)
    ours = [(r["epoch"], r["loss"], r["err1"]) for r in interrupted.read_metrics() if r.get("event") == "epoch"]
    theirs = [(r["epoch"], r["loss"], r["err1"]) for r in reference.read_metrics() if r.get("event") == "epoch"]
    assert ours == pytest.approx(theirs)  # each epoch's train line once, with the whole epoch's totals
    assert interrupted.read_status()["train_seconds"] > 0


@pytest.mark.slow
@pytest.mark.subprocess
def test_sigterm_between_checkpoints_then_resume_equals_uninterrupted(home):
    """The real worker, a real SIGTERM mid-epoch 2 with the last checkpoint long ago."""
    overrides = ["log.checkpoint_every=100", "train.epochs=4"]
    reference = make_run(overrides)
    assert main([str(reference.path)]) == 0
    run = make_run(overrides)
    proc = start_worker(run)
    wait_for(lambda: any(r.get("event") == "step" and r.get("epoch") == 2 for r in run.read_metrics()))
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 128 + signal.SIGTERM
    assert run.read_status()["state"] == "killed"
    assert torch.load(run.file("checkpoint.pt"), weights_only=True)["mid_epoch"]["epoch"] >= 1
    assert main([str(run.path), "--resume"]) == 0
    assert final_events(run) == final_events(reference)


@pytest.mark.parametrize("overrides", [["data.device=cpu"], ["data.workers=2"]], ids=["resident", "loader-workers"])
@pytest.mark.subprocess
def test_mid_epoch_resume_is_exact_for_other_loaders(home, overrides):
    """The replay re-reads the stopped epoch through whatever loader the run uses: the
    device-resident one, and a DataLoader whose workers draw the augmentation."""
    overrides = ["log.checkpoint_every=100", "train.epochs=2", *overrides]
    reference = make_run(overrides)
    assert main([str(reference.path)]) == 0
    interrupted = make_run(overrides)
    with pytest.raises(StopRequested):
        train(interrupted, resume=False, stop=StopAfter(3 + 8 + 2 + 4))  # fires at the next check: epoch 2, step 5
    assert torch.load(interrupted.file("checkpoint.pt"), weights_only=True)["mid_epoch"]["batches"] == 5
    assert main([str(interrupted.path), "--resume"]) == 0
    assert final_events(interrupted) == final_events(reference)


def test_status_epoch_follows_training_between_epoch_writes(home, monkeypatch):
    """Every status write while training carries the last finished epoch: before, a step
    heartbeat wrote only `heartbeat` and reset the 2 s clock, so the epoch write after it was
    skipped and `ls` showed epoch 6/300 while the run was in epoch 25."""
    import lowrank.train.loop as loop

    monkeypatch.setattr(loop, "HEARTBEAT_SECONDS", -1.0)  # every step line is a heartbeat
    writes: list[dict] = []
    original = RunDir.update_status

    def recording(self, **fields):
        writes.append(fields)
        return original(self, **fields)

    monkeypatch.setattr(RunDir, "update_status", recording)
    run = make_run(["log.step_every=1", "train.epochs=3"])
    with pytest.raises(StopRequested):
        train(run, resume=False, stop=StopAfter(3 + 2 * (8 + 2) + 5))  # inside epoch 3
    heartbeats = [w for w in writes if "heartbeat" in w]
    epochs = [w.get("epoch") for w in heartbeats]
    assert 1 in epochs and 2 in epochs
    first_after_epoch_1 = epochs.index(1)
    assert all(e is not None for e in epochs[first_after_epoch_1:]), epochs  # never a bare heartbeat
    assert run.read_status()["epoch"] == 2
