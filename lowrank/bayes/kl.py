"""KL terms of BC-GNJ (Louizos, Ullrich & Welling 2017, eqs. 8-10; the authors' tutorial code).

The scale variable z of a group has the improper log-uniform (normal-Jeffreys) prior and the
posterior q(z) = N(mu_z, sigma_z^2). Its KL depends only on log alpha = log sigma_z^2 - log mu_z^2
and has no closed form; we use the approximation of Molchanov et al. (2017) with the constants
of the tutorial:  -KL ~ k1 sigmoid(k2 + k3 log alpha) - 0.5 log(1 + 1/alpha) - k1.

Given z, a weight's posterior N(z mu, z^2 sigma^2) against its prior N(0, z^2) has the z-free KL
0.5 (sigma^2 + mu^2 - 1 - log sigma^2) (the paper's eq. 10, as the tutorial computes it).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

K1, K2, K3 = 0.63576, 1.87320, 1.48695
EPS = 1e-8  # in log(mu_z^2 + EPS): a z mean at exactly 0 has log alpha large, not infinite


def log_alpha(z_mu: torch.Tensor, z_logvar: torch.Tensor) -> torch.Tensor:
    """log alpha = log sigma_z^2 - log mu_z^2 per group (large: the group carries only noise)."""
    return z_logvar - torch.log(z_mu.pow(2) + EPS)


def jeffreys_kl(log_alpha_: torch.Tensor) -> torch.Tensor:
    """Sum over groups of the approximate KL(q(z) || log-uniform), from their log alpha."""
    neg_kl = K1 * torch.sigmoid(K2 + K3 * log_alpha_) - 0.5 * F.softplus(-log_alpha_) - K1
    return -neg_kl.sum()


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Sum of KL(N(mu, exp(logvar)) || N(0, 1)) over the elements (weights given z)."""
    return 0.5 * (logvar.exp() + mu.pow(2) - 1.0 - logvar).sum()
