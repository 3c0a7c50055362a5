"""CP (CANDECOMP/PARAFAC) substitute: depthwise k x k, then a 1x1 whose weight is a CP tensor.

Carroll & Chang 1970, Harshman 1970; as compressed convolutions, Lebedev et al. 2015,
"Speeding-up Convolutional Neural Networks Using Fine-tuned CP-Decomposition". The pointwise
weight is viewed as a d-mode tensor (see :mod:`lowrank.methods._tensor`) and stored as d
factors A_k of shape (n_k, R): W = sum_r A_1[:, r] o ... o A_d[:, r]. One rank R, capped at
the generic bound on the rank of any tensor of that shape, prod(n) / max(n), so no setting
exceeds what the modes allow (research notes 002, 29th Dec 2018 - 1st Jan 2019) and R >= 1.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from ._tensor import (DEFAULT_OPTIONS, RANK_SCALE, TensorPointwise, applied_macs, init_std, mode_sizes,
                      layer_ranks, stage_params, target_variance)
from .registry import ConvSpec, Method, register_method


def cp_rank(spec: ConvSpec, hp: float, dims: int = DEFAULT_OPTIONS["dims"]) -> int:
    """The CP rank R for this layer at rank scale ``hp``: round(hp * prod(n) / max(n)), at least 1."""
    sizes = mode_sizes(spec, dims)
    return layer_ranks(spec, hp, (math.prod(sizes) // max(sizes),))[0]


class CPConv(TensorPointwise):
    """Separable conv with a CP pointwise stage; (B, in, H, W) -> (B, out, H', W')."""

    def __init__(self, spec: ConvSpec, hp: float, dims: int = DEFAULT_OPTIONS["dims"]) -> None:
        super().__init__("cp", spec, hp, {"dims": dims})
        self.rank = cp_rank(spec, hp, self.dims)
        # every entry of W is a sum of R products of d factor entries
        std = init_std(target_variance(spec), self.rank, self.dims)
        self.factors = nn.ParameterList(nn.Parameter(torch.randn(n, self.rank) * std) for n in self.sizes)

    def reconstruction_macs(self) -> int:
        """Mult-adds of one reconstruction (:func:`cp_reconstruction_macs`)."""
        return cp_reconstruction_macs(self.spec, self.hp, self.dims)

    def reconstruct(self) -> torch.Tensor:
        factors = list(self.factors)
        rows = factors[0]  # Khatri-Rao product of the first d - 1 factors, then one matmul
        for factor in factors[1:-1]:
            rows = (rows[:, None, :] * factor[None, :, :]).reshape(-1, self.rank)
        return (rows @ factors[-1].t()).reshape(self.sizes)


def cp_params(spec: ConvSpec, hp: float, dims: int = DEFAULT_OPTIONS["dims"]) -> int:
    """R * sum_k n_k + depthwise + bias."""
    return cp_rank(spec, hp, dims) * sum(mode_sizes(spec, dims)) + stage_params(spec)


def cp_macs(spec: ConvSpec, hp: float, in_hw: tuple[int, int], dims: int = DEFAULT_OPTIONS["dims"]) -> int:
    """Per image: depthwise + dense 1x1 (reconstruction excluded, see :func:`cp_reconstruction_macs`)."""
    return applied_macs(spec, in_hw)


def cp_reconstruction_macs(spec: ConvSpec, hp: float, dims: int = DEFAULT_OPTIONS["dims"]) -> int:
    """Mult-adds of one reconstruction: sum_{k=2..d} (n_1...n_k) R."""
    sizes, rank = mode_sizes(spec, dims), cp_rank(spec, hp, dims)
    return sum(math.prod(sizes[:k + 1]) * rank for k in range(1, len(sizes)))


register_method(Method(
    name="cp", description="depthwise k x k + CP-decomposed 1x1 (rank scale of the generic maximal rank)",
    build=CPConv, params=cp_params, macs=cp_macs, hp=RANK_SCALE, options=dict(DEFAULT_OPTIONS),
    paper="Lebedev et al. 2015, Speeding-up CNNs Using Fine-tuned CP-Decomposition (arXiv:1412.6553)",
))
