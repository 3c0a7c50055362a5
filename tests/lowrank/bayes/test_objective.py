"""The objective divides the KL by the number of training EXAMPLES (not batches); KL warm-up."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from lowrank.bayes.convert import bayes_layers, convert
from lowrank.bayes.objective import BayesObjective, training_examples
from lowrank.models.small import MLP


class CrossEntropy:
    def __call__(self, model, images, targets, phase):
        logits = model(images)
        return F.cross_entropy(logits, targets), logits, {}


def setup(examples=100, batch=10, warmup=0.0, kl_weight=1.0):
    torch.manual_seed(0)
    model = MLP(in_features=4, hidden=(8,))
    convert(model)
    dataset = TensorDataset(torch.randn(examples, 4), torch.randint(0, 10, (examples,)))
    loader = DataLoader(dataset, batch_size=batch)
    objective = BayesObjective(CrossEntropy(), [layer for _, layer in bayes_layers(model)], kl_weight,
                               training_examples(dataset), warmup)
    return model, loader, objective


def test_kl_is_divided_by_the_number_of_training_examples_not_batches():
    model, loader, objective = setup(examples=100, batch=10)
    assert len(loader) == 10 and objective.examples == 100
    model.eval()
    images, targets = next(iter(loader))
    loss, logits, parts = objective(model, images, targets, None)
    kl = sum(layer.kl() for _, layer in bayes_layers(model))
    assert float(loss - parts["nll"]) == pytest.approx(float(kl) / 100, rel=1e-5)
    assert float(parts["kl_term"]) != pytest.approx(float(kl) / len(loader), rel=1e-2)
    with pytest.raises(TypeError, match="not a loader"):
        training_examples(loader)


def test_kl_weight_and_linear_warm_up():
    model, loader, objective = setup(warmup=4.0, kl_weight=0.5)
    objective.progress = 0.0
    assert objective.kl_factor() == 0.0
    objective.progress = 1.0
    assert objective.kl_factor() == pytest.approx(0.125)
    objective.progress = 10.0
    assert objective.kl_factor() == pytest.approx(0.5)


def test_the_kl_gradient_reaches_the_group_variables():
    model, loader, objective = setup()
    model.train()
    images, targets = next(iter(loader))
    loss, _, _ = objective(model, images, targets, None)
    loss.backward()
    for _, layer in bayes_layers(model):
        assert layer.z_logvar.grad is not None and layer.z_logvar.grad.abs().sum() > 0
