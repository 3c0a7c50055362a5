"""``block_acdc``: stacked block-diagonal ACDC layers — ACDC acting on channel groups.

The research notes (5 Nov 2018) wanted to compare "block-diagonal ACDC layers" with the full
ACDC. One layer here is ``y = B^-1 D B A x`` where A, D are learned diagonals of length N and B
is block-diagonal: ``g`` orthonormal DCT-IIs of length N/g, one per contiguous channel group
(B = block_diag(C_{N/g}, ..., C_{N/g})). Within a layer the groups do not mix; a shuffle over
all N channels between layers (``riffle`` by default, ``random`` or ``none``, as for ``acdc``)
lets information cross groups, so the stack can still approach a dense matrix while each DCT is
g times shorter. With ``shuffle: none`` the whole stack stays block-diagonal.

``groups`` (option, default 4) is reduced to the largest divisor of N = max(in, out) not above
it. Parameters: ``2*L*N`` (+ out for a bias) as for ``acdc`` (+ the depthwise stage for k > 1).
Mult-adds per position: ``min(L * (2 g (N/g) ceil(log2 (N/g)) + 2N), in*out)`` (the DCT cost
convention of :mod:`lowrank.methods.dct`); eval mode runs the counted path
(:mod:`lowrank.methods._collapsed`). Diagonals are initialised N(1, 0.01^2) as for ACDC.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ._collapsed import CollapsibleLinear
from ._common import SeparableConv, depthwise_macs, depthwise_params, pointwise_hw, require_plain
from .acdc import register_shuffle, stack_product
from .dct import cached_dct_matrix, dct, dct_macs, idct
from .registry import ConvSpec, HyperParam, Method, register_method

HP = HyperParam("layers", int, low=1, high=64, default=12, direction=1,
                description="number of stacked block-diagonal ACDC layers")
OPTIONS = {"groups": 4, "shuffle": "riffle", "seed": 0}


def effective_groups(n: int, groups: int) -> int:
    """The largest divisor of n that is <= groups (at least 1)."""
    return max(d for d in range(1, max(1, min(int(groups), n)) + 1) if n % d == 0)


def layer_cost(n: int, groups: int) -> int:
    """One layer on one vector: g DCTs and g inverse DCTs of length n/g, two diagonal multiplies."""
    g = effective_groups(n, groups)
    return 2 * g * dct_macs(n // g) + 2 * n


def pointwise_cost(in_features: int, out_features: int, layers: int, groups: int) -> int:
    """Per-position mult-adds: min(L * layer_cost, in*out), N = max(in, out)."""
    n = max(in_features, out_features)
    return min(int(layers) * layer_cost(n, groups), in_features * out_features)


class BlockACDCLinear(CollapsibleLinear):
    """Stacked block-diagonal ACDC as an ``nn.Linear`` substitute: (..., in) -> (..., out)."""

    def __init__(self, in_features: int, out_features: int, layers: int = 12, *, groups: int = 4,
                 shuffle: str = "riffle", seed: int = 0, bias: bool = False) -> None:
        if groups < 1:
            raise ValueError(f"groups must be >= 1, got groups={groups}")
        super().__init__(in_features, out_features, layers, bias=bias)
        n = self.n
        self.groups = effective_groups(n, groups)
        self.shuffle = shuffle
        self.a = nn.Parameter(torch.empty(self.layers, n))
        self.d = nn.Parameter(torch.empty(self.layers, n))
        register_shuffle(self, n, shuffle, seed)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Diagonals ~ N(1, 0.01^2) (as ACDC, Moczulski et al. 2016); bias zero."""
        with torch.no_grad():
            self.a.normal_(1.0, 1e-2)
            self.d.normal_(1.0, 1e-2)
            if self.bias is not None:
                self.bias.zero_()

    def fast_cost(self) -> int:
        """Per vector: L layers of g DCTs and g inverse DCTs of length N/g and two diagonal multiplies."""
        return self.layers * layer_cost(self.n, self.groups)

    def _blockwise(self, z: torch.Tensor, transform) -> torch.Tensor:
        shape = z.shape
        return transform(z.reshape(*shape[:-1], self.groups, self.n // self.groups)).reshape(shape)

    def transform(self, z: torch.Tensor) -> torch.Tensor:
        """The stack on length-N vectors along the last dimension."""
        for layer in range(self.layers):
            z = self._blockwise(z * self.a[layer], dct)
            z = self._blockwise(z * self.d[layer], idct)
            if self.perm is not None and layer < self.layers - 1:
                z = z.index_select(-1, self.perm)
        return z

    def stack_matrix(self, a: torch.Tensor | None = None, d: torch.Tensor | None = None) -> torch.Tensor:
        """The map of :meth:`matrix` as one batched product of the L layer matrices with the
        block-diagonal DCT matrix (:func:`lowrank.methods.acdc.stack_product`): a few kernels
        whatever L, for fitting at small N. ``a``, ``d`` (..., L, N) stand in for the diagonals."""
        a = self.a if a is None else a
        d = self.d if d is None else d
        block = cached_dct_matrix(self.n // self.groups, a.device, a.dtype)
        c = torch.block_diag(*[block] * self.groups)
        return stack_product(a, d, c, self.perm)[..., :self.in_features, :self.out_features]

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, layers={self.layers}, "
                f"groups={self.groups}, shuffle={self.shuffle}")


class BlockACDCConv(SeparableConv):
    """Depthwise k x k (k > 1) then a stacked block-diagonal ACDC 1x1 at every position."""

    def __init__(self, spec: ConvSpec, hp: int, groups: int = 4, shuffle: str = "riffle", seed: int = 0) -> None:
        super().__init__("block_acdc", spec, hp, {"groups": groups, "shuffle": shuffle, "seed": seed})
        self.acdc = BlockACDCLinear(spec.in_channels, spec.out_channels, hp, groups=groups, shuffle=shuffle,
                                    seed=seed, bias=spec.bias)

    def pointwise(self, x: torch.Tensor) -> torch.Tensor:
        return self.acdc.forward_channels(x)


def build(spec: ConvSpec, hp: int = HP.default, groups: int = 4, shuffle: str = "riffle",
          seed: int = 0) -> BlockACDCConv:
    """A separable block-diagonal ACDC conv with ``hp`` layers over ``groups`` channel groups."""
    require_plain(spec, "block_acdc")
    if int(groups) < 1:
        raise ValueError(f"groups must be >= 1, got {groups}")
    return BlockACDCConv(spec, HP.validate(hp), int(groups), shuffle, seed)


def params(spec: ConvSpec, hp: int, **options) -> int:
    """in*kh*kw (k > 1) + 2*L*max(in, out) (+ out bias); the groups do not change the count."""
    bias = spec.out_channels if spec.bias else 0
    return depthwise_params(spec) + 2 * int(hp) * max(spec.in_channels, spec.out_channels) + bias


def macs(spec: ConvSpec, hp: int, in_hw: tuple[int, int], groups: int = 4, **options) -> int:
    """Depthwise + out_h*out_w * min(L*(2 g (N/g) ceil(log2 N/g) + 2N), in*out)."""
    oh, ow = pointwise_hw(spec, in_hw)
    return depthwise_macs(spec, in_hw) + oh * ow * pointwise_cost(spec.in_channels, spec.out_channels, hp, groups)


register_method(Method(
    name="block_acdc",
    description="depthwise k x k + stacked block-diagonal ACDC 1x1 (DCTs per channel group, "
                "shuffles across groups; hp = layers)",
    build=build, params=params, macs=macs, hp=HP, options=dict(OPTIONS),
    paper="Moczulski et al. 2016 (ACDC), block-diagonal variant from the research notes (5 Nov 2018)",
))
