"""Tensor-Train substitute: depthwise k x k, then a 1x1 whose weight is a TT-matrix.

Oseledets 2011, "Tensor-Train Decomposition"; as a layer, Novikov et al. 2015,
"Tensorizing Neural Networks". The pointwise weight is viewed as a d-mode tensor (see
:mod:`lowrank.methods._tensor`) and stored as cores G_k of shape (r_{k-1}, n_k, r_k),
r_0 = r_d = 1. The full rank of bond k is min(n_1...n_k, n_{k+1}...n_d), and no bond exceeds
min(r_{k-1} n_k, n_{k+1} r_{k+1}) given its neighbours (:func:`clamp_tt_ranks`).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from ._tensor import (DEFAULT_OPTIONS, RANK_SCALE, TensorPointwise, applied_macs, init_std, mode_sizes,
                      layer_ranks, stage_params, target_variance)
from .registry import ConvSpec, Method, register_method


def tt_ranks(spec: ConvSpec, hp: float, dims: int = DEFAULT_OPTIONS["dims"]) -> tuple[int, ...]:
    """The d + 1 bond ranks (1, r_1, ..., r_{d-1}, 1) for this layer at rank scale ``hp``."""
    sizes = mode_sizes(spec, dims)
    caps = tuple(min(math.prod(sizes[:k]), math.prod(sizes[k:])) for k in range(1, len(sizes)))
    return clamp_tt_ranks((1, *layer_ranks(spec, hp, caps), 1), sizes)


def clamp_tt_ranks(ranks: tuple[int, ...], sizes: tuple[int, ...]) -> tuple[int, ...]:
    """Lower every bond to its effective bound r_k <= min(r_{k-1} n_k, n_{k+1} r_{k+1}), to a fixpoint.

    A larger r_k adds factor entries that cannot change the represented weight (the unfolding
    of core k, (r_{k-1} n_k) x r_k, has rank at most r_{k-1} n_k, and likewise on the right), so
    counting them toward a budget would count redundant parameters. Each bound is monotone in the
    other ranks, so the clamped ranks (the largest fixpoint below the staggered ones) stay
    monotone in rank_scale, and so does the parameter count.
    """
    ranks = list(ranks)
    changed = True
    while changed:
        changed = False
        for k in range(1, len(ranks) - 1):
            bound = min(ranks[k - 1] * sizes[k - 1], sizes[k] * ranks[k + 1])
            if ranks[k] > bound:
                ranks[k], changed = bound, True
    return tuple(ranks)


class TTConv(TensorPointwise):
    """Separable conv with a Tensor-Train pointwise stage; (B, in, H, W) -> (B, out, H', W')."""

    def __init__(self, spec: ConvSpec, hp: float, dims: int = DEFAULT_OPTIONS["dims"]) -> None:
        super().__init__("tt", spec, hp, {"dims": dims})
        self.ranks = tt_ranks(spec, hp, self.dims)
        # every entry of W is a sum over prod(ranks) paths of a product of d core entries
        std = init_std(target_variance(spec), math.prod(self.ranks), self.dims)
        self.cores = nn.ParameterList(
            nn.Parameter(torch.randn(self.ranks[k], n, self.ranks[k + 1]) * std) for k, n in enumerate(self.sizes)
        )

    def reconstruction_macs(self) -> int:
        """Mult-adds of one reconstruction (:func:`tt_reconstruction_macs`)."""
        return tt_reconstruction_macs(self.spec, self.hp, self.dims)

    def reconstruct(self) -> torch.Tensor:
        matrix = self.cores[0].reshape(self.sizes[0], self.ranks[1])
        for core in list(self.cores)[1:]:
            matrix = (matrix @ core.reshape(core.shape[0], -1)).reshape(-1, core.shape[-1])
        return matrix.reshape(self.sizes)


def tt_params(spec: ConvSpec, hp: float, dims: int = DEFAULT_OPTIONS["dims"]) -> int:
    """sum_k r_{k-1} n_k r_k + depthwise + bias."""
    ranks, sizes = tt_ranks(spec, hp, dims), mode_sizes(spec, dims)
    return sum(ranks[k] * n * ranks[k + 1] for k, n in enumerate(sizes)) + stage_params(spec)


def tt_macs(spec: ConvSpec, hp: float, in_hw: tuple[int, int], dims: int = DEFAULT_OPTIONS["dims"]) -> int:
    """Per image: depthwise + dense 1x1 (reconstruction excluded, see :func:`tt_reconstruction_macs`)."""
    return applied_macs(spec, in_hw)


def tt_reconstruction_macs(spec: ConvSpec, hp: float, dims: int = DEFAULT_OPTIONS["dims"]) -> int:
    """Mult-adds of one reconstruction: sum_{k>=2} (n_1...n_{k-1}) r_{k-1} n_k r_k."""
    ranks, sizes = tt_ranks(spec, hp, dims), mode_sizes(spec, dims)
    return sum(math.prod(sizes[:k]) * ranks[k] * sizes[k] * ranks[k + 1] for k in range(1, len(sizes)))


register_method(Method(
    name="tt", description="depthwise k x k + Tensor-Train-matrix 1x1 (rank scale of every bond)",
    build=TTConv, params=tt_params, macs=tt_macs, hp=RANK_SCALE, options=dict(DEFAULT_OPTIONS),
    paper="Novikov et al. 2015, Tensorizing Neural Networks (arXiv:1509.06569)",
))
