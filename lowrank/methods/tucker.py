"""Tucker substitute: depthwise k x k, then a 1x1 whose weight is a Tucker decomposition.

Tucker 1966; as compressed convolutions, Kim et al. 2016, "Compression of Deep Convolutional
Neural Networks for Fast and Low Power Mobile Applications". The pointwise weight is viewed
as a d-mode tensor (see :mod:`lowrank.methods._tensor`) and stored as a core of shape
(r_1, ..., r_d) and factors U_k of shape (n_k, r_k). The full rank of mode k is
min(n_k, prod_{j != k} n_j), and no rank exceeds the product of the others
(:func:`clamp_tucker_ranks`).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from ._tensor import (DEFAULT_OPTIONS, RANK_SCALE, TensorPointwise, applied_macs, init_std, mode_sizes,
                      layer_ranks, stage_params, target_variance)
from .registry import ConvSpec, Method, register_method


def tucker_ranks(spec: ConvSpec, hp: float, dims: int = DEFAULT_OPTIONS["dims"]) -> tuple[int, ...]:
    """The d mode ranks (r_1, ..., r_d) for this layer at rank scale ``hp``."""
    sizes = mode_sizes(spec, dims)
    total = math.prod(sizes)
    return clamp_tucker_ranks(layer_ranks(spec, hp, tuple(min(n, total // n) for n in sizes)))


def clamp_tucker_ranks(ranks: tuple[int, ...]) -> tuple[int, ...]:
    """Lower every mode rank to its effective bound r_k <= prod_{j != k} r_j, to a fixpoint.

    The mode-k unfolding of the core is r_k x prod_{j != k} r_j, so a larger r_k adds factor
    and core entries that cannot change the weight. Each bound is monotone in the other ranks,
    so the clamped ranks stay monotone in rank_scale (and so does the parameter count).
    """
    ranks = list(ranks)
    changed = True
    while changed:
        changed = False
        for k in range(len(ranks)):
            bound = math.prod(ranks[:k] + ranks[k + 1:])
            if ranks[k] > bound:
                ranks[k], changed = bound, True
    return tuple(ranks)


class TuckerConv(TensorPointwise):
    """Separable conv with a Tucker pointwise stage; (B, in, H, W) -> (B, out, H', W')."""

    def __init__(self, spec: ConvSpec, hp: float, dims: int = DEFAULT_OPTIONS["dims"]) -> None:
        super().__init__("tucker", spec, hp, {"dims": dims})
        self.ranks = tucker_ranks(spec, hp, self.dims)
        # every entry of W is a sum over prod(ranks) core entries, each times d factor entries
        std = init_std(target_variance(spec), math.prod(self.ranks), self.dims + 1)
        self.core = nn.Parameter(torch.randn(self.ranks) * std)
        self.factors = nn.ParameterList(
            nn.Parameter(torch.randn(n, r) * std) for n, r in zip(self.sizes, self.ranks)
        )

    def reconstruction_macs(self) -> int:
        """Mult-adds of one reconstruction (:func:`tucker_reconstruction_macs`)."""
        return tucker_reconstruction_macs(self.spec, self.hp, self.dims)

    def reconstruct(self) -> torch.Tensor:
        tensor = self.core
        for k, factor in enumerate(self.factors):  # mode-k product: replace axis k (r_k) by n_k
            tensor = torch.tensordot(factor, tensor, dims=([1], [k])).movedim(0, k)
        return tensor


def tucker_params(spec: ConvSpec, hp: float, dims: int = DEFAULT_OPTIONS["dims"]) -> int:
    """prod_k r_k + sum_k n_k r_k + depthwise + bias."""
    ranks, sizes = tucker_ranks(spec, hp, dims), mode_sizes(spec, dims)
    return math.prod(ranks) + sum(n * r for n, r in zip(sizes, ranks)) + stage_params(spec)


def tucker_macs(spec: ConvSpec, hp: float, in_hw: tuple[int, int], dims: int = DEFAULT_OPTIONS["dims"]) -> int:
    """Per image: depthwise + dense 1x1 (reconstruction excluded, see :func:`tucker_reconstruction_macs`)."""
    return applied_macs(spec, in_hw)


def tucker_reconstruction_macs(spec: ConvSpec, hp: float, dims: int = DEFAULT_OPTIONS["dims"]) -> int:
    """Mult-adds of one reconstruction: mode-k product costs n_k r_k (n_1..n_{k-1}) (r_{k+1}..r_d)."""
    ranks, sizes = tucker_ranks(spec, hp, dims), mode_sizes(spec, dims)
    return sum(sizes[k] * ranks[k] * math.prod(sizes[:k]) * math.prod(ranks[k + 1:]) for k in range(len(sizes)))


register_method(Method(
    name="tucker", description="depthwise k x k + Tucker-decomposed 1x1 (rank scale of every mode)",
    build=TuckerConv, params=tucker_params, macs=tucker_macs, hp=RANK_SCALE, options=dict(DEFAULT_OPTIONS),
    paper="Kim et al. 2016, Compression of Deep CNNs for Fast and Low Power Mobile Applications (arXiv:1511.06530)",
))
