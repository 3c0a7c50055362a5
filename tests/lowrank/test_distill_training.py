"""Distillation and layer-wise imitation in the worker: logged terms, teacher check, exact resume."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from lowrank.config import load
from lowrank.rundir import RunDir
from lowrank.train import StopRequested, main, train
from train_helpers import StopAfter, final_events

REPO = Path(__file__).resolve().parents[2]
DATA = ["data.name=synthetic", "data.batch_size=16", "data.workers=0",
        "data.kwargs={num_classes: 4, channels: 1, image_size: 8, num_train: 64, num_val: 32, num_test: 32, "
        "noise: 2.0}",
        "train.device=cpu", "train.lr=0.05", "log.checkpoint_every=1", "log.step_every=2"]


def make_run(overrides: list[str]) -> RunDir:
    config = load(REPO / "presets" / "quickstart.yaml", DATA + overrides)
    return RunDir.create(config.to_dict())


@pytest.fixture
def teacher_run(home) -> RunDir:
    """A trained dense tiny_convnet (width 16) to learn from, referenced by its run id."""
    run = make_run(["name=teacher", "model.kwargs.width=16", "substitute.method=dense", "train.epochs=3"])
    assert main([str(run.path)]) == 0
    return run


def student(teacher: RunDir, extra: list[str] = ()) -> RunDir:
    return make_run(["name=student", "model.kwargs.width=8", "substitute.method=generic", "substitute.hp=0.25",
                     "train.epochs=2", f"teacher.checkpoint={teacher.run_id}", "distill.alpha=0.5",
                     "distill.temperature=4", "distill.at_beta=1000", *extra])


@pytest.mark.subprocess
def test_student_logs_kd_and_at_terms_and_the_teachers_own_error(teacher_run):
    run = student(teacher_run)
    assert main([str(run.path)]) == 0
    records = run.read_metrics()
    # the teacher, rebuilt from the config saved in its checkpoint, measures what its own run measured
    teacher_event = [r for r in records if r["event"] == "teacher"]
    assert len(teacher_event) == 1
    teacher_test = [r for r in teacher_run.read_metrics() if r["event"] == "test"][-1]
    assert teacher_event[0]["checkpoint"] == str(teacher_run.file("checkpoint.pt"))  # the final weights
    assert (teacher_event[0]["err1"], teacher_event[0]["err5"]) == (teacher_test["err1"], teacher_test["err5"])
    assert teacher_event[0]["claimed_err1"] == teacher_run.read_status()["test_err1"]
    assert run.read_status()["teacher_err1"] == teacher_event[0]["err1"]
    for event in ("step", "epoch"):
        for record in (r for r in records if r["event"] == event):
            assert {"ce", "kd", "at", "at_0", "at_1"} <= set(record), record
            assert record["kd"] > 0 and record["at"] > 0
            # the logged loss is the sum of its terms: alpha*KD + (1-alpha)*CE + AT (beta-weighted)
            assert record["loss"] == pytest.approx(0.5 * record["kd"] + 0.5 * record["ce"] + record["at"], rel=1e-4)


@pytest.mark.slow
def test_distilled_run_resumes_exactly(teacher_run):
    reference = student(teacher_run)
    assert main([str(reference.path)]) == 0
    interrupted = student(teacher_run)
    with pytest.raises(StopRequested):  # in the middle of epoch 2 (4 steps per epoch)
        train(interrupted, resume=False, stop=StopAfter(6))
    assert main([str(interrupted.path), "--resume"]) == 0
    assert final_events(interrupted) == final_events(reference)


def imitation_run(teacher: RunDir) -> RunDir:
    stages = ("imitation.stages=[{name: block, epochs: 1, weight_decay: 0}, {name: output, epochs: 2}, "
              "{name: finetune, epochs: 1}]")
    return make_run(["name=imitation", "model.kwargs.width=8", "substitute.method=dense",
                     f"teacher.checkpoint={teacher.path / 'checkpoint.pt'}", "teacher.model.name=tiny_convnet",
                     "teacher.model.kwargs={width: 16}", stages, "train.epochs=4"])  # quickstart sets 30


@pytest.mark.slow
def test_imitation_runs_its_stages_and_resumes_mid_stage_two(teacher_run):
    reference = imitation_run(teacher_run)
    assert main([str(reference.path)]) == 0
    epochs = [r for r in reference.read_metrics() if r["event"] == "epoch"]
    assert [r["stage"] for r in epochs] == ["block", "output", "output", "finetune"]
    assert "mse" in epochs[0] and "mse_1" in epochs[0] and "kl" in epochs[1] and "kl" not in epochs[3]
    # each stage restarts its cosine at lr 0.05 over its own epochs (4 steps an epoch; the lr
    # logged after step 2 of a stage is the one for step 3): 1-epoch stages are half-way there
    steps = [r for r in reference.read_metrics() if r["event"] == "step"]
    firsts = [next(r for r in steps if r["epoch"] == e)["lr"] for e in (1, 2, 4)]
    half, quarter = 0.05 * (1 + math.cos(math.pi / 2)) / 2, 0.05 * (1 + math.cos(math.pi / 4)) / 2
    assert firsts == pytest.approx([half, quarter, half])

    interrupted = imitation_run(teacher_run)
    with pytest.raises(StopRequested):  # stop in the middle of epoch 3: the second epoch of stage "output"
        train(interrupted, resume=False, stop=StopAfter(4 * 2 + 2 * 3 + 2))
    assert max(r["epoch"] for r in interrupted.read_metrics() if r["event"] == "epoch") == 2
    assert main([str(interrupted.path), "--resume"]) == 0
    resumed = [r for r in interrupted.read_metrics() if r["event"] == "epoch"]
    assert [r["stage"] for r in resumed] == ["block", "output", "output", "finetune"]
    assert final_events(interrupted) == final_events(reference)
