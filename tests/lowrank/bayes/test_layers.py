"""Local reparameterisation against Monte Carlo over sampled weights; evaluation uses posterior means."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from lowrank.bayes.layers import BayesConv2d, BayesLinear


def randomise(layer) -> None:
    with torch.no_grad():
        layer.z_mu.uniform_(0.5, 1.5)
        layer.z_logvar.uniform_(-3, -1)
        layer.weight_logvar.uniform_(-4, -2)
        layer.bias_logvar.uniform_(-4, -2)


def test_linear_local_reparameterisation_moments_match_monte_carlo_over_weights():
    torch.manual_seed(0)
    layer = BayesLinear(5, 3).double()
    randomise(layer)
    x = torch.randn(1, 5, dtype=torch.float64)
    draws = 200_000
    layer.train()
    with torch.no_grad():
        lrt = layer(x.expand(draws, 5))
        # independent: sample z per input and every weight, then y = (x * z) W^T + b
        z = layer.z_mu + (0.5 * layer.z_logvar).exp() * torch.randn(draws, 5, dtype=torch.float64)
        w = layer.weight_mu + (0.5 * layer.weight_logvar).exp() * torch.randn(draws, 3, 5, dtype=torch.float64)
        b = layer.bias_mu + (0.5 * layer.bias_logvar).exp() * torch.randn(draws, 3, dtype=torch.float64)
        mc = torch.einsum("ni,noi->no", x * z, w) + b
    assert torch.allclose(lrt.mean(0), mc.mean(0), atol=5e-3)
    assert torch.allclose(lrt.var(0), mc.var(0), rtol=0.03)


def test_conv_local_reparameterisation_moments_match_monte_carlo_over_weights():
    torch.manual_seed(1)
    layer = BayesConv2d(2, 3, 3, padding=1).double()
    randomise(layer)
    x = torch.randn(1, 2, 4, 4, dtype=torch.float64)
    draws = 100_000
    layer.train()
    with torch.no_grad():
        lrt = layer(x.expand(draws, -1, -1, -1))
        # independent: one sampled filter bank per draw (shared by all positions), z per output channel
        # scaling conv + bias; the convolution written as patches @ weights
        z = layer.z_mu + (0.5 * layer.z_logvar).exp() * torch.randn(draws, 3, dtype=torch.float64)
        w = layer.weight_mu.reshape(3, 18) + (0.5 * layer.weight_logvar).exp().reshape(3, 18) * torch.randn(
            draws, 3, 18, dtype=torch.float64)
        b = layer.bias_mu + (0.5 * layer.bias_logvar).exp() * torch.randn(draws, 3, dtype=torch.float64)
        patches = F.unfold(x, 3, padding=1)[0]  # (18, 16)
        mc = (z.unsqueeze(-1) * (torch.einsum("nck,kp->ncp", w, patches) + b.unsqueeze(-1))).reshape(draws, 3, 4, 4)
    assert torch.allclose(lrt.mean(0), mc.mean(0), atol=0.02)
    assert torch.allclose(lrt.var(0), mc.var(0), rtol=0.06, atol=1e-3)


def test_evaluation_uses_posterior_means_and_the_group_mask():
    torch.manual_seed(2)
    linear, conv = BayesLinear(4, 3), BayesConv2d(2, 3, 3)
    for layer in (linear, conv):
        randomise(layer)
        layer.eval()
    x = torch.randn(2, 4)
    assert torch.allclose(linear(x), F.linear(x * linear.z_mu, linear.weight_mu, linear.bias_mu), atol=1e-6)
    assert torch.equal(linear(x), linear(x))  # deterministic
    image = torch.randn(2, 2, 5, 5)
    z = conv.z_mu.reshape(1, 3, 1, 1)
    assert torch.allclose(conv(image), z * F.conv2d(image, conv.weight_mu, conv.bias_mu), atol=1e-6)
    with torch.no_grad():
        conv.mask[1] = 0
    assert conv(image)[:, 1].abs().max() == 0  # a pruned output channel is exactly zero, bias included


def test_from_dense_keeps_the_weights_as_means_and_refuses_grouped_convs():
    dense = nn.Linear(4, 2)
    layer = BayesLinear.from_dense(dense)
    assert torch.equal(layer.weight_mu, dense.weight) and torch.equal(layer.bias_mu, dense.bias)
    with pytest.raises(ValueError, match="groups=1"):
        BayesConv2d.from_dense(nn.Conv2d(4, 4, 3, groups=2))


def test_clip_var_caps_the_weight_variance_only():
    layer = BayesLinear(3, 2, init_logvar=0.0)
    before = layer.z_logvar.detach().clone()
    layer.clip_var(0.04)
    assert float(layer.weight_logvar.detach().max()) <= math.log(0.04) + 1e-7
    assert torch.equal(layer.z_logvar, before)


def test_a_zero_input_without_bias_has_finite_gradients():
    layer = BayesConv2d(1, 2, 3, padding=1, bias=False)
    layer.train()
    layer(torch.zeros(2, 1, 4, 4)).sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in layer.parameters() if p.grad is not None)
