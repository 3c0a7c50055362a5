"""``afdf``: stacked AFDF layers, the complex Fourier variant of ACDC (Moczulski et al. 2016, Sec. 3).

One AFDF layer maps a complex length-N vector z to ``F^-1 D F A z``: A and D are learned complex
diagonals, F the unitary DFT (``torch.fft.fft(norm="ortho")``). A real input enters as a complex
vector and the stack's output is its real part, so the whole stack is the real matrix
``Re(W)`` with W the product of the layers (the paper's result that any N x N matrix is a
product of O(N) such factors is why the error falls to ~0 at about N/2 layers). No shuffle
between layers: the Fourier basis already mixes every coordinate.

Parameters: a complex diagonal is 2N reals, so ``4*L*N`` for ``L`` layers (+ out for a bias), at
``N = max(in, out)`` (zero-padded input, first ``out`` outputs kept, as for ``acdc``); for a
k x k conv a depthwise stage comes first (separable design).

Mult-adds per position, by the convention of :mod:`lowrank.methods.dct` (a real length-N
transform costs ``N ceil(log2 N)``): a complex FFT costs twice that, a complex diagonal
multiply 4N, so one layer is ``4 N ceil(log2 N) + 8 N``; the declaration is
``min(L * that, in*out)`` and the module runs the counted path in eval mode
(:mod:`lowrank.methods._collapsed`). Initialisation: Re(A), Re(D) ~ N(1, 0.01^2) and the
imaginary parts ~ N(0, 0.01^2), so the stack starts near the identity as ACDC does.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from ._collapsed import CollapsibleLinear, chain_product
from ._common import SeparableConv, depthwise_macs, depthwise_params, pointwise_hw, require_plain
from .registry import ConvSpec, HyperParam, Method, register_method

HP = HyperParam("layers", int, low=1, high=64, default=12, direction=1,
                description="number of stacked AFDF layers")
INIT_STD = 1e-2


def fft_macs(n: int) -> int:
    """Mult-adds charged for one complex length-n FFT: 2 n ceil(log2 n) (twice a real transform)."""
    return 2 * n * math.ceil(math.log2(n)) if n > 1 else 0


def layer_cost(n: int) -> int:
    """One AFDF layer on one vector: two complex FFTs and two complex diagonal multiplies."""
    return 2 * fft_macs(n) + 2 * 4 * n


def pointwise_cost(in_features: int, out_features: int, layers: int) -> int:
    """Per-position mult-adds: min(L * layer_cost(N), in*out), N = max(in, out)."""
    return min(int(layers) * layer_cost(max(in_features, out_features)), in_features * out_features)


class StackedAFDFLinear(CollapsibleLinear):
    """A stack of AFDF layers as an ``nn.Linear`` substitute: (..., in_features) -> (..., out_features)."""

    def __init__(self, in_features: int, out_features: int, layers: int = 12, *, bias: bool = False) -> None:
        super().__init__(in_features, out_features, layers, bias=bias)
        n = self.n
        # real and imaginary parts as real parameters (optimisers and counts see plain reals)
        self.a = nn.Parameter(torch.empty(2, self.layers, n))
        self.d = nn.Parameter(torch.empty(2, self.layers, n))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Real parts ~ N(1, 0.01^2), imaginary parts ~ N(0, 0.01^2); bias zero."""
        with torch.no_grad():
            for diagonal in (self.a, self.d):
                diagonal[0].normal_(1.0, INIT_STD)
                diagonal[1].normal_(0.0, INIT_STD)
            if self.bias is not None:
                self.bias.zero_()

    def fast_cost(self) -> int:
        """Per vector: L layers of two complex FFTs and two complex diagonal multiplies."""
        return self.layers * layer_cost(self.n)

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        """The stack on real length-N vectors (last dimension); returns the real part."""
        # complex tensors are made from real ones per layer and never indexed: the ONNX exporter
        # translates complex arithmetic and FFTs, but not selecting from a complex tensor
        z = torch.complex(x, torch.zeros_like(x))
        for layer in range(self.layers):
            a = torch.complex(self.a[0, layer], self.a[1, layer])
            d = torch.complex(self.d[0, layer], self.d[1, layer])
            z = torch.fft.ifft(torch.fft.fft(z * a, dim=-1, norm="ortho") * d, dim=-1, norm="ortho")
        return z.real

    def stack_matrix(self, a: torch.Tensor | None = None, d: torch.Tensor | None = None) -> torch.Tensor:
        """The map of :meth:`matrix` as one batched product of the L layer matrices
        ``diag(a_l) F diag(d_l) F^-1`` (F the unitary DFT, :func:`chain_product` order), real part:
        a few kernels whatever L, for fitting at small N. ``a``, ``d`` (..., 2, L, N) stand in for
        the diagonals (real and imaginary parts); leading batch dims give a batch of matrices."""
        a = self.a if a is None else a
        d = self.d if d is None else d
        cdtype = torch.complex128 if a.dtype == torch.float64 else torch.complex64
        eye = torch.eye(self.n, device=a.device, dtype=cdtype)
        f, f_inverse = torch.fft.fft(eye, dim=-1, norm="ortho"), torch.fft.ifft(eye, dim=-1, norm="ortho")
        a = torch.complex(a.select(-3, 0), a.select(-3, 1))
        d = torch.complex(d.select(-3, 0), d.select(-3, 1))
        w = chain_product(a[..., :, None] * ((f * d[..., None, :]) @ f_inverse)).real
        return w[..., :self.in_features, :self.out_features]

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, layers={self.layers}"


class AFDFConv(SeparableConv):
    """Depthwise k x k (k > 1) then a stacked-AFDF 1x1 on the channels at every position."""

    def __init__(self, spec: ConvSpec, hp: int) -> None:
        super().__init__("afdf", spec, hp)
        self.afdf = StackedAFDFLinear(spec.in_channels, spec.out_channels, hp, bias=spec.bias)

    def pointwise(self, x: torch.Tensor) -> torch.Tensor:
        return self.afdf.forward_channels(x)


def build(spec: ConvSpec, hp: int = HP.default) -> AFDFConv:
    """A separable stacked-AFDF conv with ``hp`` layers."""
    require_plain(spec, "afdf")
    return AFDFConv(spec, HP.validate(hp))


def params(spec: ConvSpec, hp: int, **options) -> int:
    """in*kh*kw (k > 1) + 4*L*max(in, out) (+ out bias)."""
    bias = spec.out_channels if spec.bias else 0
    return depthwise_params(spec) + 4 * int(hp) * max(spec.in_channels, spec.out_channels) + bias


def macs(spec: ConvSpec, hp: int, in_hw: tuple[int, int], **options) -> int:
    """Depthwise + out_h*out_w * min(L*(4 N ceil(log2 N) + 8N), in*out)."""
    oh, ow = pointwise_hw(spec, in_hw)
    return depthwise_macs(spec, in_hw) + oh * ow * pointwise_cost(spec.in_channels, spec.out_channels, hp)


register_method(Method(
    name="afdf",
    description="depthwise k x k + stacked AFDF 1x1 (y = Re F^-1 D F A x, complex diagonals; hp = layers)",
    build=build, params=params, macs=macs, hp=HP,
    paper="Moczulski et al. 2016, ACDC: A Structured Efficient Linear Layer (AFDF, Sec. 3)",
))
