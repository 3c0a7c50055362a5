"""Bits per weight from the posterior variance, the two compression factors, and the float format
the bit widths describe (paper section 5).

As the authors' tutorial (compression.py) computes them, per Bayesian layer, over its kept weights:
  significand bits  s = ceil(mean over weights of #{t in 1..23 : 2 var < 2^-t})
                    (the bits at which the unit round-off 2^-t still lies below twice the weight's
                    posterior variance; a weight the posterior is unsure of needs few bits)
  exponent bits     e = ceil(log2(log2(overflow) + 1) + 1), overflow = the largest |kept mean|
                    over all layers (clamped at 2: below that the tutorial's formula is undefined)
  bits per weight   1 (sign) + e + s

  architecture factor  dense weights / kept weights                   (counts weights, not biases)
  precision factor     32 * dense weights / sum(kept weights * bits)  ("with weight uncertainty")

Two quantised models are evaluated from these widths (``lowrank.bayes.hook``):
  quantised_test_err1       the weights rounded to the FLOAT FORMAT the widths describe, as the paper
                            quantises (significand bits, with the exponent range the weights need):
                            1 sign bit, e exponent bits shared by the network, the layer's s fraction
                            bits; the exponent range is fitted to the weights - its largest exponent
                            is that of the largest |kept mean| (floor log2), and all 2^e - 1 non-zero
                            exponent codes are normal binades below it (weights need no inf/NaN),
                            then subnormals down to 2^(emin - s) and 0. Round half to even (IEEE
                            754's default), saturating at the largest finite value. See FloatFormat.
  quantised_grid_test_err1  the tutorial's special_round: each layer's weights to an absolute grid of
                            step 2^-s (``prune.rounded``); coarser than the float format for weights
                            below 1 in magnitude, so its error is a pessimistic figure.
The bias (the fitted largest exponent) is one small integer per network, not counted in the factors.
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
    largest: float = 0.0  # the largest |kept mean| over all layers (the exponent range is fitted to it)

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
    def formats(self) -> dict[str, "FloatFormat"]:
        """The float format of each layer: its significand bits, the shared exponent bits and range."""
        return {name: FloatFormat.fitted(s, self.exponent, self.largest) for name, s in self.significand.items()}

    def describe(self) -> str:
        """What quantised_test_err1 measures, in one line (the run summary's quantised_format)."""
        any_format = FloatFormat.fitted(0, self.exponent, self.largest)
        widths = ", ".join(f"{name} {s}" for name, s in self.significand.items())
        return (f"float: 1 sign + {self.exponent} exponent bits (binades 2^{any_format.emin}..2^{any_format.emax}, "
                f"fitted to the largest weight) + significand bits per layer ({widths}); round half to even, "
                f"subnormals, saturating")

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
                       exponent=exponent_bits(overflow), largest=overflow)


@dataclass(frozen=True)
class FloatFormat:
    """A binary floating-point format: 1 sign bit, ``exponent`` bits, ``significand`` fraction bits.

    Normal values are +-(1 + f / 2^s) 2^E for E in [emin, emax] and f in 0 .. 2^s - 1; below 2^emin
    the subnormals +-(f / 2^s) 2^emin (step 2^(emin - s)), and 0. :meth:`ieee` is IEEE 754's layout
    (bias 2^(e-1) - 1, the top exponent code kept for inf/NaN: ieee(10, 5) is float16, ieee(7, 8)
    bfloat16, ieee(23, 8) float32); :meth:`fitted` puts the range where a network's weights are.
    """

    significand: int
    exponent: int
    emin: int
    emax: int

    def __post_init__(self) -> None:
        if self.significand < 0 or self.exponent < 1 or self.emin > self.emax:
            raise ValueError(f"not a float format: {self}")

    @classmethod
    def ieee(cls, significand: int, exponent: int) -> "FloatFormat":
        bias = 2 ** (exponent - 1) - 1
        return cls(significand, exponent, emin=1 - bias, emax=bias)

    @classmethod
    def fitted(cls, significand: int, exponent: int, largest: float) -> "FloatFormat":
        """emax the exponent of ``largest`` (floor log2; 0 for 0), and every one of the 2^e - 1 non-zero
        exponent codes a normal binade below it: a weight format needs no inf or NaN."""
        emax = math.frexp(largest)[1] - 1 if largest > 0 and math.isfinite(largest) else 0
        return cls(significand, exponent, emin=emax - (2 ** exponent - 2), emax=emax)

    @property
    def max_finite(self) -> float:
        return (2.0 - 2.0 ** -self.significand) * 2.0 ** self.emax

    @torch.no_grad()
    def round(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` rounded to the nearest value of the format (ties to the even significand), saturating
        at +-max_finite; computed in float64 (every step exact), returned in ``x``'s dtype."""
        a = x.double().abs()
        exponent = (torch.frexp(a).exponent - 1).clamp(min=self.emin)  # a in [2^E, 2^(E+1)); subnormal: emin
        step = torch.ldexp(torch.ones_like(a), exponent - self.significand)
        m = a / step  # the significand as an integer in [2^s, 2^(s+1)] (subnormal: [0, 2^s])
        r = torch.round(m)  # half to even: the even significand, whose last bit is the code's last bit
        if self.significand == 0:  # no fraction bits: a tie between 2^E and 2^(E+1) goes to the even
            code = exponent - self.emin + 1  # exponent code (IEEE's rule on the encoding's last bit)
            tie = (m - m.floor() == 0.5) & (a >= 2.0 ** self.emin)
            r = torch.where(tie, m.floor() + code.remainder(2), r)
        q = (r * step).clamp(max=self.max_finite)
        return torch.where(x < 0, -q, q).to(x.dtype)
