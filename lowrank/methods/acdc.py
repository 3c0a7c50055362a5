"""``acdc``: stacked ACDC layers (Moczulski et al. 2016, "ACDC: A Structured Efficient Linear Layer").

One ACDC layer maps a length-N vector x to ``y = C^-1 D C A x``: A and D are learned diagonals,
C the orthonormal DCT-II (``scipy.fft.dct(type=2, norm="ortho")``), C^-1 = C^T its inverse
(DCT-III ortho). A stack of ``L`` layers (the hyperparameter) has a shuffle between layers:
``riffle`` (interleave the two halves, as ShuffleNet-style shuffles do), ``random`` (one fixed
permutation drawn from ``seed``, a buffer, reused at every gap) or ``none``. ``extra_riffle`` adds
a riffle between C and D inside every layer (the research notes' variant, 8 Oct 2018).
Diagonals are initialised N(1, 0.01^2), i.e. mean 1, std 1e-2 (the paper's recommendation).

Shapes: ``in != out`` works at ``N = max(in, out)``: the input is zero-padded from ``in`` to
``N`` channels (expand) and the first ``out`` outputs are kept (contract). Parameters: the
diagonals, ``2*L*N`` (the ``N - in`` entries of the first A that only ever see padding are
counted: they are parameters of the module), plus ``out`` for a bias.

As a conv substitute (separable design) a k x k depthwise conv comes first and the stack acts on
the channels at every position. Two forward paths give the same output:
- ``collapse``: push the ``in`` basis vectors through the stack to get the effective in x out
  matrix (differentiable) and apply it as a 1x1 conv — cheap when batch*H*W >> N;
- ``fast``: DCTs via ``torch.fft`` on the channel dimension, O(N log N) per position.
With ``path="auto"`` an eval forward runs the counted path (below) with the collapsed matrix
cached under no_grad (:class:`lowrank.methods._collapsed.CollapsibleLinear`), and a training
forward the faster path by :func:`choose_path`'s wall-clock cost model; ``path="collapse"`` or
``"fast"`` forces one path in both modes (and the count follows it).

Mult-adds (per output position, eval): ``min(L*(2*N*ceil(log2 N) + 2*N), in*out)`` — two DCTs and
two diagonal multiplies per layer, or the collapsed in x out matrix when that is cheaper at test
time (as the notes settled on, 16 Oct 2018); a forced path declares its own term. Shuffles are
free; the bias is not counted. Training costs (matrix build per forward) are reported apart
(``lowrank count --train``).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn as nn

from ._collapsed import CollapsibleLinear, chain_product, declared_per_position
from ._common import SeparableConv, depthwise_macs, depthwise_params, pointwise_hw, require_plain
from .dct import cached_dct_matrix, dct, dct_macs, from_makhoul, idct, makhoul_order, scale_in_dct_domain, to_makhoul
from .registry import ConvSpec, HyperParam, Method, register_method

HP = HyperParam("layers", int, low=1, high=64, default=12, direction=1,
                description="number of stacked ACDC layers")
OPTIONS = {"shuffle": "riffle", "extra_riffle": False, "path": "auto", "seed": 0}
SHUFFLES = ("riffle", "random", "none")

# Cost model used only to pick the faster (numerically equivalent) path, never to count:
# a GEMM mult-add is several times cheaper than an FFT-path mult-add in PyTorch (one fused BLAS
# call vs about a dozen elementwise/FFT kernels per layer), and every kernel call has a fixed
# overhead (~10 us on CPU, a few us on GPU) worth roughly LAUNCH_COST mult-adds. Fitted to
# forward+backward timings on a 2-core CPU (L=12): collapse wins from ~100 positions at N=128,
# ~300 at N=256, ~1000-2000 at N=1024; at N=4096 fast wins below ~65k positions.
GEMM_ADVANTAGE = 16.0
LAUNCH_COST = 10_000
FAST_KERNELS_PER_LAYER = 14   # mul, gather, rfft, twiddle, real/imag, flip, cat, ... (dct + idct)
DENSE_KERNELS_PER_LAYER = 5   # mul, matmul, mul, matmul, gather
# Building the collapsed matrix with dense N x N DCT matmuls beats the FFT up to about this N
# (fewer, larger kernels; measured on CPU: 3.6x faster at N=64, equal at 256, 2x slower at 512).
DENSE_DCT_MAX = 256


def riffle_permutation(n: int) -> torch.Tensor:
    """Indices that interleave the first ceil(n/2) entries with the rest: out[j] = in[perm[j]]."""
    half = (n + 1) // 2
    return torch.tensor([j // 2 if j % 2 == 0 else half + j // 2 for j in range(n)], dtype=torch.long)


def layer_cost(n: int) -> int:
    """Mult-adds of one ACDC layer on one length-n vector: two DCTs and two diagonal multiplies."""
    return 2 * dct_macs(n) + 2 * n


def choose_path(positions: int, in_features: int, out_features: int, layers: int) -> str:
    """'collapse' or 'fast', whichever the cost model says is cheaper for this many positions."""
    n = max(in_features, out_features)
    fast = positions * layers * layer_cost(n) + layers * FAST_KERNELS_PER_LAYER * LAUNCH_COST
    if n <= DENSE_DCT_MAX:  # matrix() pushes `in` rows through dense DCT matmuls
        build = in_features * layers * (2 * n * n / GEMM_ADVANTAGE + 2 * n) + layers * DENSE_KERNELS_PER_LAYER * LAUNCH_COST
    else:                   # ... or through the FFT path
        build = in_features * layers * layer_cost(n) + layers * FAST_KERNELS_PER_LAYER * LAUNCH_COST
    collapse = build + positions * in_features * out_features / GEMM_ADVANTAGE
    return "collapse" if collapse <= fast else "fast"


def stack_product(a: torch.Tensor, d: torch.Tensor, c: torch.Tensor, perm: torch.Tensor | None = None,
                  inner: torch.Tensor | None = None) -> torch.Tensor:
    """The N x N matrix W (``x -> x W``) of L stacked layers ``z -> ((z*a_l) C^T [inner]) * d_l C``
    with the shuffle ``perm`` between layers: the product of the layer matrices
    ``diag(a_l) C^T R diag(d_l) C P`` (R the inner permutation, P the shuffle, none after the
    last layer) in :func:`chain_product` order. ``a``, ``d``: (..., L, N), any leading batch dims;
    ``c``: the N x N orthonormal transform (``dct(v) = v @ c.T``); ``perm``/``inner``: the
    ``index_select`` indices of :meth:`StackedACDCLinear.transform`."""
    n, layers = c.shape[-1], a.shape[-2]
    left = c.t() if inner is None else c.t().index_select(-1, inner)
    right = c
    if perm is not None and layers > 1:
        right = torch.cat([c.index_select(-1, perm).expand(layers - 1, n, n), c[None]])
    return chain_product(a[..., :, None] * ((left * d[..., None, :]) @ right))


def register_shuffle(module: nn.Module, n: int, shuffle: str, seed: int) -> None:
    """``module.perm``: the between-layer permutation of ``shuffle`` as a buffer (None for ``none``);
    shared by acdc and block_acdc."""
    if shuffle not in SHUFFLES:
        raise ValueError(f"shuffle must be one of {SHUFFLES}, got {shuffle!r}")
    if shuffle == "random":
        module.register_buffer("perm", torch.randperm(n, generator=torch.Generator().manual_seed(seed)))
    elif shuffle == "riffle":
        module.register_buffer("perm", riffle_permutation(n))
    else:
        module.perm = None


class StackedACDCLinear(CollapsibleLinear):
    """A stack of ACDC layers as an ``nn.Linear`` substitute: (..., in_features) -> (..., out_features)."""

    def __init__(self, in_features: int, out_features: int, layers: int = 12, *,
                 shuffle: Literal["riffle", "random", "none"] = "riffle", extra_riffle: bool = False,
                 bias: bool = False, path: Literal["auto", "collapse", "fast"] = "auto", seed: int = 0) -> None:
        super().__init__(in_features, out_features, layers, bias=bias, path=path)
        n = self.n
        self.shuffle, self.extra_riffle = shuffle, bool(extra_riffle)
        self.a = nn.Parameter(torch.empty(self.layers, n))
        self.d = nn.Parameter(torch.empty(self.layers, n))
        self.register_buffer("riffle", riffle_permutation(n))
        register_shuffle(self, n, shuffle, seed)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Diagonals ~ N(1, 0.01^2) (Moczulski et al. 2016, Sec. 5); bias zero."""
        with torch.no_grad():
            self.a.normal_(1.0, 1e-2)
            self.d.normal_(1.0, 1e-2)
            if self.bias is not None:
                self.bias.zero_()

    def fast_cost(self) -> int:
        """Per vector: L layers of two DCTs and two diagonal multiplies."""
        return self.layers * layer_cost(self.n)

    def dense_build(self) -> bool:
        """Whether :meth:`matrix` uses explicit N x N DCT matrices (faster up to DENSE_DCT_MAX)."""
        return self.n <= DENSE_DCT_MAX

    def build_cost(self) -> int:
        """One :meth:`matrix` call: ``in`` rows through the stack (two N x N matmuls per layer when
        :meth:`dense_build`, else the transform's cost) and two diagonal multiplies per layer."""
        if self.dense_build():
            return self.layers * (2 * self.in_features * self.n * self.n + 2 * self.in_features * self.n)
        return self.in_features * self.fast_cost()

    def training_choice(self, positions: int) -> str:
        """The wall-clock cost model's choice (:func:`choose_path`)."""
        return choose_path(positions, self.in_features, self.out_features, self.layers)

    def transform(self, z: torch.Tensor, dense_dct: bool = False) -> torch.Tensor:
        """The stack on length-N vectors along the last dimension: O(L N log N) each via the FFT,
        or with explicit N x N DCT matrices when ``dense_dct`` (same result, for small N)."""
        if not dense_dct and not self.extra_riffle:
            return self._spectral_transform(z)
        if dense_dct:
            c = cached_dct_matrix(self.n, z.device, z.dtype)
            forward, inverse = (lambda v: v @ c.t()), (lambda v: v @ c)  # dct(v) = v C^T, idct(v) = v C
        else:
            forward, inverse = dct, idct
        for layer in range(self.layers):
            z = forward(z * self.a[layer])
            if self.extra_riffle:
                z = z.index_select(-1, self.riffle)
            z = inverse(z * self.d[layer])
            if self.perm is not None and layer < self.layers - 1:
                z = z.index_select(-1, self.perm)
        return z

    def _spectral_transform(self, z: torch.Tensor) -> torch.Tensor:
        """:meth:`transform` via :func:`scale_in_dct_domain` per layer, the reorderings between layers
        (idct's output order, the shuffle, the next dct's input order) composed into one gather."""
        perm, inverse = makhoul_order(self.n, z.device)
        v = to_makhoul(z) * self.a[0].index_select(0, perm)
        for layer in range(self.layers):
            w = scale_in_dct_domain(v, self.d[layer])
            if layer == self.layers - 1:
                return from_makhoul(w)
            # next input: ((w[inverse])[shuffle] * a)[perm] = w[inverse[shuffle[perm]]] * a[perm]
            between = inverse if self.perm is None else inverse.index_select(0, self.perm)
            v = w.index_select(-1, between.index_select(0, perm)) * self.a[layer + 1].index_select(0, perm)
        return v  # unreachable: layers >= 1

    def matrix(self) -> torch.Tensor:
        """The effective (in_features, out_features) matrix W, so that the stack is x @ W (+ bias).

        Exported (``torch.export``), the build goes through the FFT transform: the dense path's
        N x N DCT matrix would be stored in the file as a constant as large as the expansion."""
        dense = self.dense_build() and not torch.compiler.is_exporting()
        return self.transform(self.basis(), dense_dct=dense)[:, :self.out_features]

    def stack_matrix(self, a: torch.Tensor | None = None, d: torch.Tensor | None = None) -> torch.Tensor:
        """The map of :meth:`matrix` as one batched product of the L layer matrices
        (:func:`stack_product`, dense DCT matrices): a few kernels whatever L, for fitting the
        layer at small N (``lowrank study approx``). ``a``, ``d`` (..., L, N) stand in for the
        module's diagonals; leading batch dims give a batch of (in, out) matrices."""
        a = self.a if a is None else a
        d = self.d if d is None else d
        c = cached_dct_matrix(self.n, a.device, a.dtype)
        w = stack_product(a, d, c, self.perm, self.riffle if self.extra_riffle else None)
        return w[..., :self.in_features, :self.out_features]

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, layers={self.layers}, "
                f"shuffle={self.shuffle}, extra_riffle={self.extra_riffle}, path={self.path}")


LinearACDC = StackedACDCLinear  # the name the research notes use


def linear_params(in_features: int, out_features: int, layers: int, bias: bool = False) -> int:
    """Parameters of :class:`StackedACDCLinear`: 2*L*max(in, out) (+ out for the bias)."""
    return 2 * int(layers) * max(in_features, out_features) + (out_features if bias else 0)


class ACDCConv(SeparableConv):
    """Depthwise k x k (k > 1) then a stacked-ACDC 1x1 on the channels at every position."""

    def __init__(self, spec: ConvSpec, hp: int, shuffle: str = "riffle", extra_riffle: bool = False,
                 path: str = "auto", seed: int = 0) -> None:
        options = {"shuffle": shuffle, "extra_riffle": extra_riffle, "path": path, "seed": seed}
        super().__init__("acdc", spec, hp, options)
        self.acdc = StackedACDCLinear(spec.in_channels, spec.out_channels, hp, shuffle=shuffle,
                                      extra_riffle=extra_riffle, bias=spec.bias, path=path, seed=seed)

    def pointwise(self, x: torch.Tensor) -> torch.Tensor:
        return self.acdc.forward_channels(x)


def build(spec: ConvSpec, hp: int = HP.default, shuffle: str = "riffle", extra_riffle: bool = False,
          path: str = "auto", seed: int = 0) -> ACDCConv:
    """A separable stacked-ACDC conv with ``hp`` layers."""
    require_plain(spec, "acdc")
    return ACDCConv(spec, HP.validate(hp), shuffle, extra_riffle, path, seed)


def params(spec: ConvSpec, hp: int, **options) -> int:
    """in*kh*kw (k > 1) + 2*L*max(in, out) (+ out bias)."""
    return depthwise_params(spec) + linear_params(spec.in_channels, spec.out_channels, hp, spec.bias)


def pointwise_cost(in_features: int, out_features: int, layers: int, path: str = "auto") -> int:
    """Per-vector mult-adds at test time: min(L*(2 N ceil(log2 N) + 2N), in*out), N = max(in, out),
    or the forced path's cost (``fast``: the first term, ``collapse``: in*out)."""
    fast = int(layers) * layer_cost(max(in_features, out_features))
    return declared_per_position(in_features, out_features, fast, path)


def macs(spec: ConvSpec, hp: int, in_hw: tuple[int, int], path: str = "auto", **options) -> int:
    """Depthwise + out_h*out_w * min(L*(2 N ceil(log2 N) + 2N), in*out) (or the forced path's cost)."""
    oh, ow = pointwise_hw(spec, in_hw)
    return depthwise_macs(spec, in_hw) + oh * ow * pointwise_cost(spec.in_channels, spec.out_channels, hp, path)


register_method(Method(
    name="acdc",
    description="depthwise k x k + stacked ACDC 1x1 (y = C^-1 D C A x per layer, riffle shuffles; hp = layers)",
    build=build, params=params, macs=macs, hp=HP, options=dict(OPTIONS),
    paper="Moczulski et al. 2016, ACDC: A Structured Efficient Linear Layer",
))
