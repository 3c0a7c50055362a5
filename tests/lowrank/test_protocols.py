"""Protocol fields in the worker: drop-path schedule, auxiliary loss, AMP, channels_last, phases."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from lowrank.config import from_dict, load
from lowrank.protocol import Objective, Phase, drop_path_prob, plan_phases
from lowrank.rundir import RunDir
from lowrank.train import main

REPO = Path(__file__).resolve().parents[2]
TINY_DATA = ["data.name=synthetic", "data.batch_size=8", "data.workers=0", "train.device=cpu", "log.step_every=1"]


def run_preset(preset: str, overrides: list[str]) -> RunDir:
    config = load(REPO / "presets" / preset, TINY_DATA + overrides)
    run = RunDir.create(config.to_dict())
    main([str(run.path)])
    return run


def epochs_of(run: RunDir) -> list[dict]:
    return [r for r in run.read_metrics() if r["event"] == "epoch"]


def test_darts_drop_path_rises_linearly_and_aux_loss_is_logged(home):
    run = run_preset("darts_teacher.yaml", [
        "model.kwargs={C: 4, layers: 3, auxiliary: true}", "train.epochs=4",
        "data.kwargs={num_classes: 10, channels: 3, image_size: 32, num_train: 8, num_val: 8, num_test: 8}"])
    status = run.read_status()
    assert status["state"] == "finished", status.get("error")
    records = epochs_of(run)
    # DARTS train.py: drop_path_prob = 0.2 * epoch / epochs at the start of 0-based epoch
    assert [r["drop_path_prob"] for r in records] == pytest.approx([0.0, 0.05, 0.10, 0.15])
    for record in records:  # loss = ce + 0.4 * aux (per-sample means over the same batches)
        assert record["loss"] == pytest.approx(record["ce"] + 0.4 * record["aux"], rel=1e-5)


def test_drop_path_prob_formula():
    assert [drop_path_prob(0.2, e, 600) for e in (0, 300, 599)] == pytest.approx([0.0, 0.1, 0.2 * 599 / 600])


def test_objective_adds_weighted_aux_cross_entropy():
    class WithAux(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.main, self.aux = nn.Linear(4, 3), nn.Linear(4, 3)

        def forward(self, x):
            return self.main(x), self.aux(x)

    torch.manual_seed(0)
    model, x, y = WithAux(), torch.randn(5, 4), torch.tensor([0, 1, 2, 1, 0])
    config = from_dict({"train": {"aux_weight": 0.4}})
    loss, logits, parts = Objective(config)(model, x, y, plan_phases(config)[0])
    expected = F.cross_entropy(model.main(x), y) + 0.4 * F.cross_entropy(model.aux(x), y)
    assert float(loss.detach()) == pytest.approx(float(expected.detach()))
    assert set(parts) == {"ce", "aux"}


@pytest.mark.parametrize("override,key", [
    ("train.aux_weight=0.4", "train.aux_weight"),      # tiny_convnet has no auxiliary head
    ("train.drop_path_max=0.2", "train.drop_path_max"),  # ... nor drop-path
    ("train.amp=fp16", "train.amp"),                   # fp16 needs CUDA
])
def test_protocol_field_the_model_or_device_cannot_honour_fails_clearly(home, override, key):
    data = "data.kwargs={channels: 1, image_size: 8, num_train: 8, num_val: 8, num_test: 8}"
    run = run_preset("quickstart.yaml", ["model.kwargs.width=4", "train.epochs=1", override, data])
    status = run.read_status()
    assert status["state"] == "failed" and key in status["error"], status


def test_bf16_autocast_runs_on_cpu_and_channels_last_is_a_cpu_no_op(home):
    data = "data.kwargs={channels: 1, image_size: 8, num_train: 32, num_val: 16, num_test: 16}"
    common = ["model.kwargs.width=4", "train.epochs=2", data]
    plain = run_preset("quickstart.yaml", common)
    nhwc = run_preset("quickstart.yaml", common + ["train.channels_last=true"])
    bf16 = run_preset("quickstart.yaml", common + ["train.amp=bf16"])
    for run in (plain, nhwc, bf16):
        assert run.read_status()["state"] == "finished", run.read_status().get("error")
    assert [r["loss"] for r in epochs_of(nhwc)] == [r["loss"] for r in epochs_of(plain)]
    bf16_losses = [r["loss"] for r in epochs_of(bf16)]
    assert all(loss == loss for loss in bf16_losses)
    # bfloat16 has an 8-bit mantissa: close to float32, but computed differently
    assert bf16_losses != [r["loss"] for r in epochs_of(plain)]
    assert bf16_losses == pytest.approx([r["loss"] for r in epochs_of(plain)], rel=0.05)


def test_imitation_phases_cover_the_run_with_their_own_optimisers():
    config = from_dict({
        "train": {"lr": 0.05, "weight_decay": 1e-4, "optimizer": "sgd"},
        "teacher": {"checkpoint": "t.pt"},
        "imitation": {"stages": [{"name": "block", "epochs": 2, "weight_decay": 0.0},
                                 {"name": "output", "epochs": 3, "lr": 0.1, "schedule": {"name": "constant"}},
                                 {"name": "finetune", "epochs": 1, "optimizer": "adam"}]}})
    phases = plan_phases(config)
    assert config.train.epochs == 6  # unset: the sum of the stages
    assert [(p.name, p.stage, p.start, p.end) for p in phases] == [
        ("block", 1, 0, 2), ("output", 2, 2, 5), ("finetune", 3, 5, 6)]
    assert [(p.optimizer, p.lr, p.weight_decay) for p in phases] == [
        ("sgd", 0.05, 0.0), ("sgd", 0.1, 1e-4), ("adam", 0.05, 1e-4)]
    assert phases[1].schedule.name == "constant" and phases[0].schedule.name == "cosine"
    assert isinstance(phases[0], Phase)
