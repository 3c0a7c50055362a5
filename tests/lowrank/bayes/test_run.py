"""BC-GNJ through the real worker on the embedded digits: the report, pruned.pt, N, clip_var, NaN guard."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import torch

from lowrank.bayes.report import load_pruned
from lowrank.config import load
from lowrank.data import build_datasets
from lowrank.errors import ConfigError
from lowrank.rundir import RunDir
from lowrank.train import main
from lowrank.train.evaluation import evaluate
from lowrank.train.stop import StopFlag

REPO = Path(__file__).resolve().parents[3]
MLP_PRESET = REPO / "presets" / "bayes_mlp_digits.yaml"
SMALL_MLP = ["model.kwargs.hidden=[32, 16]", "train.epochs=2", "train.device=cpu", "log.eval_every=1",
             "log.step_every=10"]
DIGITS_TRAIN = 1258


def run_preset(preset: Path, overrides: list[str]) -> RunDir:
    run = RunDir.create(load(preset, overrides).to_dict())
    assert main([str(run.path)]) in (0, 1)
    return run


def test_digits_mlp_run_reports_compression_and_a_pruned_model_equal_to_the_masked_one(home):
    dense = run_preset(REPO / "presets" / "bayes_mlp_digits_dense.yaml", SMALL_MLP)
    assert dense.read_status()["state"] == "finished"
    # init_logvar -1 starts every layer above clip_var; thresholds 20 keep every group of that noisy start
    run = run_preset(MLP_PRESET, SMALL_MLP + ["bayes.init_logvar=-1", "bayes.thresholds=20"])
    status = run.read_status()
    assert status["state"] == "finished", status.get("error")
    for key in ("compression_architecture", "compression_precision", "test_err1", "pruned_test_err1",
                "quantised_test_err1", "unmasked_test_err1", "dense_baseline_err1"):
        assert status[key] is not None, key
    assert status["dense_baseline_err1"] == dense.read_status()["test_err1"]
    assert status["dense_baseline_run"] == dense.run_id
    assert status["test_err1"] == status["masked_test_err1"] == status["pruned_test_err1"]
    assert status["pruned_matches_masked"] is True and status["pruned_max_abs_diff"] <= 1e-4
    report = json.loads(run.file("bayes.json").read_text())
    assert [row["layer"] for row in report["layers"]] == ["net.1", "net.3", "net.5"]
    assert report["training_examples"] == DIGITS_TRAIN
    kept = sum(row["kept_weights"] for row in report["layers"])
    assert status["compression_architecture"] == pytest.approx(report["bayes_dense_weights"] / kept)
    # ... and the results.csv row carries the figures
    with open(run.home / "results.csv", newline="") as handle:
        row = next(r for r in csv.DictReader(handle) if r["run_id"] == run.run_id)
    for key in ("compression_architecture", "compression_precision", "pruned_test_err1", "dense_baseline_err1"):
        assert float(row[key]) == pytest.approx(status[key]), key

    # pruned.pt reloads (weights only) as a plain network with the reported error
    config = load(MLP_PRESET, SMALL_MLP)
    data = build_datasets(config.data)
    model = load_pruned(run.file("pruned.pt"), data.num_classes, data.input_shape[0])
    assert not any("Bayes" in type(m).__name__ for m in model.modules())
    loader = torch.utils.data.DataLoader(data.test, batch_size=128)
    assert evaluate(model, loader, torch.device("cpu"), StopFlag())["err1"] == status["pruned_test_err1"]

    # per-epoch sparsity curves, and KL / N with N the number of training examples (not batches)
    epochs = [r for r in run.read_metrics() if r.get("event") == "epoch"]
    assert len(epochs) == 2
    for record in epochs:
        assert {"kl", "kl_term", "weights_kept", "compression_architecture", "groups_kept/net.1"} <= set(record)
        # kl_term = kl_weight * KL / N (the preset's kl_weight, 0.2, chosen on the validation set)
        assert record["kl_term"] * DIGITS_TRAIN == pytest.approx(config.bayes.kl_weight * record["kl"], rel=1e-4)

    # clip_var (0.04) holds on the first layer only (init_logvar -1 starts every layer above it)
    state = torch.load(run.file("checkpoint.pt"), weights_only=True)["model"]
    assert float(state["net.1.weight_logvar"].max()) <= math.log(0.04) + 1e-6
    assert float(state["net.3.weight_logvar"].max()) > math.log(0.04)


@pytest.mark.slow
def test_a_conv_network_compresses_and_prunes_filters_exactly(home):
    run = run_preset(REPO / "presets" / "bayes_lenet5_digits.yaml",
                     ["model.kwargs.widths=[8, 16]", "model.kwargs.hidden=32", "train.epochs=6", "train.lr=0.01",
                      "train.device=cpu", "bayes.init_logvar=-5", "log.step_every=10"])
    status = run.read_status()
    assert status["state"] == "finished", status.get("error")
    report = json.loads(run.file("bayes.json").read_text())
    convs = [row for row in report["layers"] if row["kind"] == "conv"]
    assert len(convs) == 2 and any(row["out_kept"] < row["out"] for row in convs)
    # a pruned filter of the first conv is a pruned input channel of the second
    assert convs[1]["in_kept"] == convs[0]["out_kept"]
    assert status["compression_architecture"] > 1.5
    assert status["pruned_matches_masked"] is True and status["pruned_test_err1"] == status["test_err1"]
    assert status["test_err1"] < 30


def test_a_non_finite_loss_names_the_layer_whose_log_variance_overflowed(home):
    run = run_preset(MLP_PRESET, SMALL_MLP + ["train.lr=1e4", "bayes.clip_var=null"])
    status = run.read_status()
    assert status["state"] == "failed"
    error = status["error"]
    assert "non-finite loss" in error and "epoch 1" in error and "step" in error
    assert "log-variance" in error or "not finite" in error
    assert "layer net." in error


@pytest.mark.parametrize("override, key", [
    ("train.weight_decay=5e-4", "train.weight_decay"),
    ("substitute.method=separable", "substitute.method"),
    ("bayes.layers=everything", "bayes.layers"),
    ("bayes.thresholds=[-3, 99]", "bayes.thresholds"),
    ("bayes.kl_weight=0", "bayes.kl_weight"),
])
def test_bad_bayes_settings_are_one_config_error(override, key):
    with pytest.raises(ConfigError) as caught:
        load(MLP_PRESET, [override])
    assert key in str(caught.value) and "\n" not in str(caught.value)


def test_thresholds_of_the_wrong_length_fail_the_run_naming_the_layers(home):
    run = run_preset(MLP_PRESET, SMALL_MLP + ["bayes.thresholds=[-3, -3]"])
    status = run.read_status()
    assert status["state"] == "failed" and "3 Bayesian layers" in status["error"] and "net.1" in status["error"]
