"""The deployable network: what lowrank count counts (training-only modules removed), a run's trained
weights, a Bayesian run's physically pruned model, and the dense reference of the same preset."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lowrank.config import load
from lowrank.deploy.deployable import dense_reference, from_preset, from_run
from lowrank.errors import UserError
from lowrank.rundir import RunDir
from lowrank.train import main

REPO = Path(__file__).resolve().parents[3]
DARTS = REPO / "presets" / "darts_student.yaml"
SMALL_DARTS = ["model.kwargs.C=8", "model.kwargs.layers=5"]  # the auxiliary head sits after 2/3 of the cells


def _count(preset: Path, overrides: list[str]) -> dict:
    from console.commands.count import count_preset

    return count_preset(preset, overrides)


def test_the_darts_student_ships_without_its_auxiliary_head_and_counts_as_lowrank_count_does():
    net = from_preset(DARTS, SMALL_DARTS)
    counted = _count(DARTS, SMALL_DARTS)
    assert counted["training_only_params"] > 0  # the preset really has a training-only head
    assert net.params == counted["params"] == sum(p.numel() for p in net.model.parameters())
    assert net.macs == counted["macs"]
    assert [entry["module"] for entry in net.removed] == ["auxiliary_head"]
    assert net.removed[0]["params"] == counted["training_only_params"]
    assert getattr(net.model, "auxiliary_head") is None and not net.model.training
    with torch.no_grad():
        logits = net.model(net.example(2))
    assert logits.shape == (2, 10)  # eval forward: logits only, no auxiliary output


def test_the_dense_reference_is_the_same_preset_without_substitution():
    net = from_preset(DARTS, SMALL_DARTS)
    dense = dense_reference(net)
    counted = _count(DARTS, SMALL_DARTS)
    assert dense.method == "dense" and dense.label == "dense"
    assert dense.params == counted["dense_params"] == sum(p.numel() for p in dense.model.parameters())
    assert dense.macs == counted["dense_macs"]


def test_a_bayes_preset_is_refused_before_it_has_a_pruned_model():
    with pytest.raises(UserError, match="pruned"):
        from_preset(REPO / "presets" / "bayes_mlp_digits.yaml")


def _run(preset: Path, overrides: list[str]) -> RunDir:
    run = RunDir.create(load(preset, overrides).to_dict())
    assert main([str(run.path)]) == 0, run.read_status().get("error")
    return run


@pytest.mark.subprocess
def test_a_run_ships_its_best_weights(home):
    run = _run(REPO / "presets" / "quickstart.yaml", ["train.epochs=2"])
    net = from_run(run.path)
    best = torch.load(run.file("best.pt"), weights_only=True)["model"]
    shipped = net.model.state_dict()
    assert set(shipped) == set(best)
    assert all(torch.equal(shipped[key], best[key]) for key in best)
    assert net.weights.endswith("best.pt")


def test_a_bayesian_run_ships_its_physically_pruned_network(home):
    # thresholds -8 after 3 epochs prunes about a fifth of the units (the preset's -3 needs its full training)
    overrides = ["model.kwargs.hidden=[32, 16]", "train.epochs=3", "train.device=cpu", "bayes.thresholds=-8"]
    run = _run(REPO / "presets" / "bayes_mlp_digits.yaml", overrides)
    net = from_run(run.path)
    assert not any("Bayes" in type(module).__name__ for module in net.model.modules())
    assert net.weights.endswith("pruned.pt") and net.method == "bayes"
    assert net.params == sum(p.numel() for p in net.model.parameters())
    status = run.read_status()
    # physically smaller than the dense MLP it was trained as
    assert net.params < status["dense_params"]
    dense = dense_reference(net)
    assert dense.params == status["dense_params"]
    with torch.no_grad():
        assert net.model(net.example(3)).shape == dense.model(dense.example(3)).shape == (3, 10)
