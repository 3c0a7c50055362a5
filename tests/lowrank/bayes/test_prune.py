"""Masks from log-alpha thresholds, units followed through the chain, pruned == masked outputs."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from lowrank.bayes.convert import bayes_layers, convert
from lowrank.bayes.prune import (NotAChain, apply_masks, call_order, export_pruned, group_masks, kept_units,
                                 rounded)
from lowrank.models.small import MLP, LeNet5


def prune_groups(layer, which) -> None:
    """Make the groups ``which`` of ``layer`` noise (log alpha ~ +5), the others signal (log alpha ~ -9)."""
    with torch.no_grad():
        layer.z_logvar.fill_(-9.0)
        layer.z_logvar[which] = 5.0


def masked_and_pruned(model, sample, thresholds=-3.0):
    masks = group_masks(model, thresholds)
    apply_masks(model, masks)
    kept = kept_units(model, masks, call_order(model, sample))
    return kept, export_pruned(model, kept)


def test_masks_are_log_alpha_below_the_layer_threshold():
    model = MLP(in_features=6, hidden=(5,))
    convert(model)
    (first_name, first), (second_name, second) = bayes_layers(model)
    with torch.no_grad():
        first.z_logvar.copy_(torch.tensor([-9.0, -4.0, -2.9, -2.7, 0.0, 3.0]))
        first.z_mu.fill_(1.0)
    masks = group_masks(model, [-2.8, -5.0])
    assert masks[first_name].tolist() == [True, True, True, False, False, False]
    with pytest.raises(ValueError, match="2 Bayesian layers"):
        group_masks(model, [-3.0])


def test_pruned_mlp_equals_the_masked_mlp_and_drops_rows_of_the_layer_before():
    torch.manual_seed(0)
    model = MLP(in_features=8, hidden=(6, 5))
    convert(model)
    layers = [layer for _, layer in bayes_layers(model)]
    prune_groups(layers[0], [1, 2])  # two pixels
    prune_groups(layers[1], [0, 3, 4])  # three hidden units of the first hidden layer
    prune_groups(layers[2], [2])
    model.eval()
    kept, pruned = masked_and_pruned(model, torch.zeros(1, 8))
    linears = [m for m in pruned.modules() if isinstance(m, nn.Linear)]
    assert [tuple(m.weight.shape) for m in linears] == [(3, 6), (4, 3), (10, 4)]
    assert not any(isinstance(m, nn.Module) and "Bayes" in type(m).__name__ for m in pruned.modules())
    x = torch.randn(64, 8)
    assert torch.allclose(model(x), pruned(x), atol=1e-5)
    assert [row.weights for row in kept] == [18, 12, 40]


def test_pruned_convnet_equals_the_masked_one_and_a_pruned_filter_removes_the_next_input_channel():
    torch.manual_seed(1)
    model = LeNet5(image_size=8, kernel=3, padding=1, widths=(6, 8), hidden=12)
    convert(model)
    named = dict(bayes_layers(model))
    conv1, conv2, fc1 = named["features.0"], named["features.3"], named["classifier.1"]
    prune_groups(conv1, [0, 4])  # filters 0 and 4: conv2 loses input channels 0 and 4
    prune_groups(conv2, [2])  # filter 2: fc1 loses that channel's 2x2 = 4 features
    with torch.no_grad():  # all features of conv2's channel 5 pruned at fc1: channel 5 goes too
        fc1.z_logvar.fill_(-9.0)
        fc1.z_logvar[5 * 4:6 * 4] = 5.0
        fc1.z_logvar[[1, 13]] = 5.0  # and single features inside living channels 0 and 3
    model.eval()
    kept, pruned = masked_and_pruned(model, torch.zeros(1, 1, 8, 8))
    convs = [m for m in pruned.modules() if isinstance(m, nn.Conv2d)]
    assert [tuple(c.weight.shape[:2]) for c in convs] == [(4, 1), (6, 4)]
    first_linear = [m for m in pruned.modules() if isinstance(m, nn.Linear)][0]
    assert first_linear.in_features == 6 * 4 - 2
    x = torch.randn(32, 1, 8, 8)
    assert torch.allclose(model(x), pruned(x), atol=1e-5)


def test_a_layer_called_twice_is_not_a_chain():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(4, 4)

        def forward(self, x):
            return self.a(self.a(x))

    model = Twice()
    convert(model)
    masks = group_masks(model, -3.0)
    with pytest.raises(NotAChain):
        kept_units(model, masks, call_order(model, torch.zeros(1, 4)))


def test_convert_chooses_layers_by_kind_and_skip():
    model = LeNet5(image_size=8, kernel=3, padding=1)
    assert convert(model, "convs") == ["features.0", "features.3"]
    model = LeNet5(image_size=8, kernel=3, padding=1)
    assert convert(model, "linears", skip=["classifier.3"]) == ["classifier.1"]


def test_rounding_is_to_a_grid_of_two_to_the_minus_bits():
    w = torch.tensor([0.30, -0.30, 0.12, 1.0])
    assert rounded(w, 2).tolist() == [0.25, -0.25, 0.0, 1.0]
    assert torch.equal(rounded(w, None), w)


def conv_stack(batch_norm: bool) -> nn.Sequential:
    norm = (lambda c: nn.BatchNorm2d(c)) if batch_norm else (lambda c: nn.Identity())
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), norm(4), nn.ReLU(), nn.Conv2d(4, 6, 3, padding=1), norm(6),
                         nn.ReLU(), nn.Conv2d(6, 5, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(5 * 36, 7))


@pytest.mark.parametrize("batch_norm, layers, skip", [
    (False, "convs", []),  # the last Bayesian conv feeds a dense linear
    (False, "all", ["3"]),  # a dense conv between two Bayesian ones
    (False, "linears", []),
    (True, "all", []),  # BatchNorm maps a pruned channel's 0 to a constant
    (True, "convs", []),
])
def test_pruning_stops_at_dense_layers_and_batch_norm_and_stays_exact(batch_norm, layers, skip):
    torch.manual_seed(0)
    model = conv_stack(batch_norm)
    if batch_norm:  # running statistics away from (0, 1), as after training
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-1, 1)
                module.bias.data.uniform_(-1, 1)
    convert(model, layers, skip)
    for _, layer in bayes_layers(model):
        prune_groups(layer, [1])
    model.eval()
    sample = torch.randn(6, 1, 6, 6)
    kept, pruned = masked_and_pruned(model, sample[:1])
    assert (model(sample) - pruned(sample)).abs().max() <= 1e-5
    assert pruned(sample).shape == (6, 7)
