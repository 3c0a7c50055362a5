"""Shared machinery of the tensor-decomposed substitutes (Tensor-Train, Tucker, CP).

All three compress the 1x1 stage of the separable design the same way: the dense pointwise
weight W (out, in) is viewed as a d-mode tensor and only the decomposition's factors are
stored; W is reconstructed in ``forward`` and applied as a 1x1 convolution.

Reshaping (TT-matrix style, Novikov et al. 2015, "Tensorizing Neural Networks"): out and in
are each split into d near-balanced integer factors, out = o_1...o_d and in = i_1...i_d
(a prime becomes (p, 1, ..., 1)); mode k of the tensor pairs o_k with i_k, so its size is
n_k = o_k * i_k. The o's are sorted large-to-small and the i's small-to-large so the n_k
are as even as the factorisations allow. W[o, i] is T[(o_1, i_1), ..., (o_d, i_d)] with
(o_1..o_d) and (i_1..i_d) the row-major digits of o and i. Every shape works, including
primes and tiny channel counts (modes of size 1 are allowed; ranks are capped by them).

Rank scaling (research notes 002, 1st-2nd January 2019: a rank larger than a mode crashed CP,
a rank of 0 crashed it too, and one rank repeated over modes gave no control over the
parameter count): the hyperparameter ``rank_scale`` in [0, 1] is the fraction of each
rank's *full* value, the largest rank that mode or bond can use (``caps``); so 1 represents
any weight exactly and every rank is clamped to [1, cap]. Rank j of a layer is
floor(rank_scale * cap_j + o_j): rank_scale * cap_j rounded with a threshold o_j in [0, 1)
instead of the usual 0.5. The offsets are irrational and differ per rank and per layer shape
(:func:`rounding_offsets`), so each rank stays monotone in rank_scale (and so does the
parameter count) while the ranks of different bonds and different layers step at different
rank_scale values; with 0.5 everywhere, the power-of-two caps of the CIFAR networks made most
steps coincide. The network's count then rises in many small steps instead of a few large
ones, which the budget solver needs to land within 1% on small networks. Layers of one shape
still step together (their count is a function of the shape and rank_scale only).

Initialisation: every factor entry is N(0, s^2), with s chosen so each entry of the
reconstructed W has variance 2 / in, kaiming-normal (fan_in, ReLU gain) of the dense 1x1
(:func:`init_std`: an entry is a sum of ``terms`` products of ``factors`` independent entries).
The depthwise stage keeps PyTorch's default init.

Mult-adds (per image): depthwise + out_h * out_w * out * in for the reconstructed 1x1. The
reconstruction itself runs once per training forward, i.e. once per batch; in eval mode (or
without autograd) W is cached (rebuilt when a factor changes, :mod:`lowrank.methods._collapsed`), so a
steady-state eval forward executes exactly the declared figure. It is left out of the per-image
figure; each method exposes it as ``<method>_reconstruction_macs(spec, hp)`` and
``lowrank count --train`` adds it once per forward, spread over the batch.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
import torch.nn as nn
import torch.nn.functional as F

from ._collapsed import CollapsedCache, collapsed_matrix
from ._common import SubstituteConv, depthwise, depthwise_macs, depthwise_params, has_spatial, require_plain
from .registry import ConvSpec, HyperParam

RANK_SCALE = HyperParam(
    name="rank_scale", kind=float, low=0.0, high=1.0, default=0.25, direction=1,
    description="fraction of the full rank of every mode/bond (1 = exact for any weight); ranks >= 1",
)
DEFAULT_OPTIONS = {"dims": 3}


def _prime_factors(n: int) -> list[int]:
    factors, p = [], 2
    while p * p <= n:
        while n % p == 0:
            factors.append(p)
            n //= p
        p += 1
    if n > 1:
        factors.append(n)
    return factors


@lru_cache(maxsize=None)
def balanced_factors(n: int, d: int) -> tuple[int, ...]:
    """Split ``n`` into ``d`` integer factors as evenly as possible, largest first.

    Greedy: primes from largest to smallest, each multiplied into the currently smallest
    factor. 640 -> (10, 8, 8); 3 -> (3, 1, 1); 1 -> (1, 1, 1).
    """
    if n < 1 or d < 1:
        raise ValueError(f"cannot factor {n} into {d} factors")
    bins = [1] * d
    for p in sorted(_prime_factors(n), reverse=True):
        bins[bins.index(min(bins))] *= p
    return tuple(sorted(bins, reverse=True))


@lru_cache(maxsize=None)
def mode_shapes(out_channels: int, in_channels: int, dims: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(o_1..o_d, i_1..i_d): the factors paired into modes; o large-to-small, i small-to-large."""
    outs = balanced_factors(out_channels, dims)
    ins = tuple(reversed(balanced_factors(in_channels, dims)))
    return outs, ins


def mode_sizes(spec: ConvSpec, dims: int) -> tuple[int, ...]:
    """n_k = o_k * i_k, the sizes of the d modes of the pointwise weight tensor."""
    outs, ins = mode_shapes(spec.out_channels, spec.in_channels, _check_dims(dims))
    return tuple(o * i for o, i in zip(outs, ins))


def _check_dims(dims: int) -> int:
    if int(dims) != dims or dims < 2:
        raise ValueError(f"dims={dims!r}: the number of tensor modes must be an integer >= 2")
    return int(dims)


_PRIMES = (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53)
_GOLDEN = (math.sqrt(5) - 1) / 2


def rounding_offsets(out_channels: int, in_channels: int, m: int) -> tuple[float, ...]:
    """The m rounding offsets of a layer: frac(sqrt(p_j) + golden * (out * 65537 + in)), p_j the j-th prime.

    Irrational, distinct per rank and per layer shape, so steps rarely coincide (module docstring).
    """
    if m > len(_PRIMES):
        raise ValueError(f"at most {len(_PRIMES)} ranks per layer are supported, got {m}")
    key = _GOLDEN * (out_channels * 65537 + in_channels)
    return tuple((math.sqrt(p) + key) % 1.0 for p in _PRIMES[:m])


def staggered_ranks(rank_scale: float, caps: tuple[int, ...], offsets: tuple[float, ...]) -> tuple[int, ...]:
    """rank_j = clamp(floor(rank_scale * cap_j + offset_j), 1, cap_j): rank_scale * cap_j, rounded."""
    rank_scale = RANK_SCALE.validate(rank_scale)
    return tuple(min(cap, max(1, math.floor(rank_scale * cap + o))) for cap, o in zip(caps, offsets))


def layer_ranks(spec: ConvSpec, rank_scale: float, caps: tuple[int, ...]) -> tuple[int, ...]:
    """:func:`staggered_ranks` with this layer's offsets."""
    return staggered_ranks(rank_scale, caps, rounding_offsets(spec.out_channels, spec.in_channels, len(caps)))


def to_matrix(tensor: torch.Tensor, outs: tuple[int, ...], ins: tuple[int, ...]) -> torch.Tensor:
    """Inverse of the mode pairing: a tensor of shape (o_1 i_1, ..., o_d i_d) -> W (out, in)."""
    d = len(outs)
    paired = tensor.reshape([size for pair in zip(outs, ins) for size in pair])  # o1,i1,o2,i2,...
    order = list(range(0, 2 * d, 2)) + list(range(1, 2 * d, 2))  # o1..od, i1..id
    return paired.permute(order).reshape(math.prod(outs), math.prod(ins))


def init_std(entries_var: float, terms: int, factors: int) -> float:
    """Std of each of ``factors`` iid zero-mean factors so a sum of ``terms`` products has ``entries_var``.

    An entry of the reconstruction is a sum of ``terms`` products of ``factors`` independent
    zero-mean entries, so its variance is terms * std^(2 * factors).
    """
    return (entries_var / terms) ** (1.0 / (2 * factors))


def target_variance(spec: ConvSpec) -> float:
    """Kaiming-normal (fan_in, ReLU gain) variance of the dense 1x1 weight: 2 / in_channels."""
    return 2.0 / spec.in_channels


class TensorPointwise(SubstituteConv):
    """Depthwise k x k (when k > 1), then a 1x1 conv whose weight is rebuilt from tensor factors.

    Input (B, in, H, W) -> output (B, out, H', W') exactly as ``nn.Conv2d`` with the spec.
    Subclasses create the factors in ``__init__`` and implement :meth:`reconstruct`.
    """

    def __init__(self, method_name: str, spec: ConvSpec, hp: float, options: dict) -> None:
        require_plain(spec, method_name)
        super().__init__(method_name, spec, hp, options)
        self.dims = _check_dims(self.options.get("dims", DEFAULT_OPTIONS["dims"]))
        self.outs, self.ins = mode_shapes(spec.out_channels, spec.in_channels, self.dims)
        self.sizes = tuple(o * i for o, i in zip(self.outs, self.ins))
        self.depthwise = depthwise(spec) if has_spatial(spec) else None
        self.bias = nn.Parameter(torch.zeros(spec.out_channels)) if spec.bias else None
        self._cache = CollapsedCache()

    def reconstruct(self) -> torch.Tensor:
        """The d-mode tensor of shape ``self.sizes``."""
        raise NotImplementedError

    def reconstruction_macs(self) -> int:
        """Mult-adds of one :meth:`reconstruct` (the method's ``*_reconstruction_macs``)."""
        raise NotImplementedError

    def dense_weight(self) -> torch.Tensor:
        """The pointwise weight rebuilt from the factors, shape (out, in, 1, 1)."""
        matrix = to_matrix(self.reconstruct(), self.outs, self.ins)
        return matrix.reshape(self.spec.out_channels, self.spec.in_channels, 1, 1)

    def train(self, mode: bool = True) -> "TensorPointwise":
        """Switch mode and drop the cached weight (see :class:`lowrank.methods._collapsed.CollapsedCache`)."""
        self._cache.clear()
        return super().train(mode)

    def weight(self) -> torch.Tensor:
        """The pointwise weight for this forward: cached in eval mode or without autograd (its gradient
        then rebuilt in backward), rebuilt every forward in training mode."""
        return collapsed_matrix(self, self._cache, self.dense_weight)

    def train_macs(self, x: torch.Tensor) -> int:
        """A training forward on the batch ``x``: the per-image figure per image + one reconstruction."""
        return super().train_macs(x) + self.reconstruction_macs()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.depthwise is not None:  # the depthwise stage carries stride, padding, dilation
            return F.conv2d(self.depthwise(x), self.weight(), self.bias)
        return F.conv2d(x, self.weight(), self.bias, self.spec.stride, self.spec.padding)


def stage_params(spec: ConvSpec) -> int:
    """Parameters outside the factors: the depthwise stage and the bias."""
    return depthwise_params(spec) + (spec.out_channels if spec.bias else 0)


def applied_macs(spec: ConvSpec, in_hw: tuple[int, int]) -> int:
    """Per-image mult-adds: the depthwise stage + the reconstructed dense 1x1 at the output size.

    Convention: the reconstruction of the weight from its factors is done once per forward
    (once per batch, and once in total at deployment) and is not a per-image cost, so it is
    not included here; see each method's ``reconstruction_macs``.
    """
    oh, ow = spec.out_hw(in_hw)
    return depthwise_macs(spec, in_hw) + oh * ow * spec.out_channels * spec.in_channels
