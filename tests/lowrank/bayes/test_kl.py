"""The KL terms against independent references: numerical integration and torch.distributions."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import integrate, stats

from lowrank.bayes.kl import K1, gaussian_kl, jeffreys_kl, log_alpha
from lowrank.bayes.layers import BayesConv2d, BayesLinear


def exact_neg_kl_up_to_constant(alpha: float) -> float:
    """-KL(N(theta, alpha theta^2) || log-uniform) + const = 0.5 log alpha - E log|1 + sqrt(alpha) eps|
    (Molchanov et al. 2017, eq. 7), integrated numerically around the log singularity."""
    root = math.sqrt(alpha)
    singular = -1.0 / root

    def integrand(eps: float) -> float:
        return math.log(abs(1.0 + root * eps)) * stats.norm.pdf(eps)

    lower = integrate.quad(integrand, -np.inf, singular, limit=200)[0]
    upper = integrate.quad(integrand, singular, np.inf, limit=200)[0]
    return 0.5 * math.log(alpha) - (lower + upper)


def test_jeffreys_kl_matches_numerical_integration_up_to_its_constant():
    log_alphas = np.linspace(-6, 6, 25)
    exact = np.array([exact_neg_kl_up_to_constant(math.exp(a)) for a in log_alphas])
    approx = np.array([-float(jeffreys_kl(torch.tensor([a], dtype=torch.float64))) for a in log_alphas])
    gap = exact - approx
    # the approximation is good to about 0.01 (Molchanov et al.), up to the additive constant
    assert np.abs(gap - gap.mean()).max() < 0.02
    # and the constant: as alpha -> infinity the exact value tends to -E log|eps| = (gamma + log 2) / 2,
    # while the approximation tends to 0 (C = -k1 by construction)
    assert gap.mean() == pytest.approx((np.euler_gamma + math.log(2)) / 2, abs=0.02)
    assert K1 == pytest.approx((np.euler_gamma + math.log(2)) / 2, abs=1e-3)


def test_jeffreys_kl_is_sum_over_groups_and_decreases_with_alpha():
    values = torch.tensor([-4.0, 0.0, 4.0])
    assert float(jeffreys_kl(values)) == pytest.approx(sum(float(jeffreys_kl(v.reshape(1))) for v in values))
    singles = [float(jeffreys_kl(v.reshape(1))) for v in values]
    assert singles[0] > singles[1] > singles[2] > 0


def test_gaussian_kl_equals_the_conditional_kl_for_any_z():
    torch.manual_seed(0)
    mu, logvar = torch.randn(7, 5, dtype=torch.float64), torch.randn(7, 5, dtype=torch.float64) - 2
    for z in (0.3, 1.0, 2.5):  # q(w|z) = N(z mu, z^2 sigma^2) against p(w|z) = N(0, z^2): z cancels
        q = torch.distributions.Normal(z * mu, z * (0.5 * logvar).exp())
        p = torch.distributions.Normal(torch.zeros_like(mu), z * torch.ones_like(mu))
        reference = torch.distributions.kl_divergence(q, p).sum()
        assert float(gaussian_kl(mu, logvar)) == pytest.approx(float(reference), rel=1e-10)


@pytest.mark.parametrize("layer", [BayesLinear(6, 4), BayesConv2d(3, 5, 3)])
def test_layer_kl_is_the_tutorial_formula_written_independently(layer):
    with torch.no_grad():
        layer.z_logvar.uniform_(-6, 1)
        layer.weight_logvar.uniform_(-6, -1)
    la = (layer.z_logvar - torch.log(layer.z_mu ** 2 + 1e-8)).detach().numpy().astype(np.float64)
    k1, k2, k3 = 0.63576, 1.87320, 1.48695
    neg = k1 / (1 + np.exp(-(k2 + k3 * la))) - 0.5 * np.log1p(np.exp(-la)) - k1
    total = -neg.sum()
    for mu, lv in ((layer.weight_mu, layer.weight_logvar), (layer.bias_mu, layer.bias_logvar)):
        mu, lv = mu.detach().double().numpy(), lv.detach().double().numpy()
        total += np.sum(-0.5 * lv + 0.5 * (np.exp(lv) + mu ** 2) - 0.5)
    assert float(layer.kl().detach()) == pytest.approx(total, rel=1e-5)
    assert torch.equal(layer.log_alpha(), log_alpha(layer.z_mu, layer.z_logvar))
