"""The MLP of stacked ACDC layers (research notes 001's MNIST model)."""

from __future__ import annotations

import torch

from lowrank.methods.acdc import linear_params
from lowrank.models import create_model


def test_acdc_mlp_shapes_parameters_and_gradients() -> None:
    model = create_model("acdc_mlp", num_classes=10, in_channels=1, image_size=8, depth=5)
    n = 64
    # each layer: two diagonals (2N) and a bias (N), as lowrank.methods.acdc counts a 1-layer stack
    assert sum(p.numel() for p in model.parameters()) == 5 * linear_params(n, n, 1, bias=True) == 5 * 3 * n
    x = torch.randn(4, 1, 8, 8)
    out = model(x)
    assert out.shape == (4, 10)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_acdc_mlp_without_relu_is_linear() -> None:
    torch.manual_seed(0)
    model = create_model("acdc_mlp", image_size=4, depth=3, relu=False)
    a, b = torch.randn(2, 1, 4, 4), torch.randn(2, 1, 4, 4)
    bias = model(torch.zeros(1, 1, 4, 4))
    assert torch.allclose(model(a + b) - bias, (model(a) - bias) + (model(b) - bias), atol=1e-5)
