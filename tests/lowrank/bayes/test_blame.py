"""The NaN guard names the layer whose log-variance overflowed, even after the NaN step spread to all."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from lowrank.bayes.hook import BayesRun


def settings() -> SimpleNamespace:
    return SimpleNamespace(layers="all", skip=[], init_logvar=-9.0, thresholds=-3.0, clip_var=0.04,
                           clip_layers="first", kl_weight=1.0, warmup_epochs=0.0)


@pytest.mark.parametrize("culprit, param", [("3", "weight_logvar"), ("5", "z_logvar"), ("1", "bias_logvar")])
def test_blame_names_the_overflowing_layer_after_adam_spread_the_nan(culprit, param):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 16), nn.ReLU(),
                          nn.Linear(16, 10))
    run = BayesRun(settings(), model, 100, torch.zeros(1, 64))
    objective = run.wrap(lambda m, x, y, phase: (F.cross_entropy(m(x), y), None, {}))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    images, targets = torch.randn(8, 64), torch.randint(0, 10, (8,))
    for step in range(3):  # as the loop: begin_step, forward/backward, step, after_step
        if step == 1:
            with torch.no_grad():
                getattr(model.get_submodule(culprit), param).view(-1)[0] = 100.0  # exp overflows float32
        optimizer.zero_grad()
        run.begin_step(step / 10)
        loss, _, _ = objective(model, images, targets, None)
        loss.backward()
        optimizer.step()
        run.after_step()
    assert not torch.isfinite(loss)
    assert all(not torch.isfinite(p).all() for p in model[1].parameters())  # the NaN reached every layer
    run.begin_step(0.3)
    blame = run.blame()
    assert f"overflowed in layer {culprit} ({param} max 100)" in blame
