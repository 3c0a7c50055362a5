"""Bits per weight from the posterior variance, and the two compression factors (paper section 5).

As the authors' tutorial (compression.py) computes them, per Bayesian layer, over its kept weights:
  significand bits  s = ceil(mean over weights of #{t in 1..23 : 2 var < 2^-t})
                    (the bits at which the unit round-off 2^-t still lies below twice the weight's
                    posterior variance; a weight the posterior is unsure of needs few bits)
  exponent bits     e = ceil(log2(log2(overflow) + 1) + 1), overflow = the largest |kept mean|
                    over all layers (clamped at 2: below that the tutorial's formula is undefined)
  bits per weight   1 (sign) + e + s

  architecture factor  dense weights / kept weights                   (counts weights, not biases)
  precision factor     32 * dense weights / sum(kept weights * bits)  ("with weight uncertainty")

The quantised model rounds each layer's weights as the tutorial's special_round does, to a grid of
step 2^-s (s the layer's significand bits): an absolute grid, coarser for weights below 1 in
magnitude than a float with s significand bits would be, so its error is a pessimistic figure.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .prune import Kept

MANTISSA_BITS = 23  # float32
IN_PRECISION = 32.0


def significand_bits(variances: torch.Tensor) -> int:
    """The layer's significand bits from its kept weights' posterior variances."""
    if variances.numel() == 0:
        return 0
    limits = torch.tensor([2.0 ** -(t + 1) for t in range(MANTISSA_BITS)], dtype=torch.float64,
                          device=variances.device)
    needed = (2.0 * variances.double().reshape(-1, 1) < limits).sum(dim=1).double()
    return int(math.ceil(needed.mean().item()))


def exponent_bits(overflow: float) -> int:
    return int(math.ceil(math.log2(math.log2(max(overflow, 2.0)) + 1.0) + 1.0))


@dataclass
class Compression:
    """The factors and bit widths of one network's Bayesian layers."""

    dense_weights: int
    kept: dict[str, int]  # layer -> kept weights
    significand: dict[str, int]  # layer -> significand bits
    exponent: int  # exponent bits (shared)

    @property
    def kept_weights(self) -> int:
        return sum(self.kept.values())

    @property
    def bits(self) -> dict[str, int]:
        """Bits per weight of each layer: sign + exponent + significand."""
        return {name: 1 + self.exponent + s for name, s in self.significand.items()}

    @property
    def architecture(self) -> float:
        return self.dense_weights / self.kept_weights if self.kept_weights else math.inf

    @property
    def precision(self) -> float:
        out_bits = sum(self.kept[name] * bits for name, bits in self.bits.items())
        return IN_PRECISION * self.dense_weights / out_bits if out_bits else math.inf


@torch.no_grad()
def compression(kept: list[Kept]) -> Compression:
    """Both factors and each layer's bit widths, from the kept units and the posterior."""
    means, variances = {}, {}
    for row in kept:
        mean, var = row.layer.posterior()
        means[row.name] = mean[row.keep_out][:, row.keep_in]
        variances[row.name] = var[row.keep_out][:, row.keep_in]
    overflow = max((float(m.abs().max()) for m in means.values() if m.numel()), default=0.0)
    return Compression(dense_weights=sum(row.dense_weights for row in kept),
                       kept={row.name: row.weights for row in kept},
                       significand={name: significand_bits(v) for name, v in variances.items()},
                       exponent=exponent_bits(overflow))
