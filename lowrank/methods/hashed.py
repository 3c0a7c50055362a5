"""``hashed`` and ``sep_hashed``: HashedNets (Chen et al. 2015, "Compressing Neural Networks with
the Hashing Trick").

A virtual weight tensor of M entries is backed by K = max(1, floor(hp*M + 0.5)) real parameters:
``virtual[i] = sign(i) * w[h(i)]`` where, for the flat index i and a per-layer seed s,
``a = mix32((i ^ s) & 0xffffffff)``, ``h(i) = a mod K`` and ``sign(i) = +1`` if bit 0 of
``mix32(a ^ 0x5bd1e995)`` is 0 else -1. ``mix32`` is the "lowbias32" integer finaliser
(C. Wellons), computed in int64 with 32-bit masking so CPU, CUDA and plain Python agree
(see :func:`mix32_python`). The layer seed is derived from the ``seed`` option and the conv's
shape; :func:`lowrank.substitute.substitute` first makes ``seed`` per layer from the layer's
name, so every layer of a net has its own hash (same shapes included) and a rebuild is identical.

- ``hashed``: the whole conv weight (out, in, kh, kw) is hashed; mult-adds are the dense conv's
  (the virtual weight is dense), as the notes' counter showed (5.24564E+09 before and after).
- ``sep_hashed``: a full depthwise k x k conv (k > 1) then a hashed 1x1 (M = in*out).

Memory (option ``index``): ``"buffer"`` (default) keeps ONE non-persistent int32 buffer of M
entries that packs index and sign (code = h for +1, ~h = -h-1 for -1): 4 bytes per virtual
weight, the same as a float32 dense weight, and no int64 tensor. ``"recompute"`` keeps nothing
and rehashes in every forward (transient int64 work of ~8 bytes per weight, freed after).
Index and sign are buffers, never parameters; the bias (if any) is a real, unhashed parameter.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ._collapsed import CollapsedCache, collapsed_matrix
from ._common import (SeparableConv, SubstituteConv, conv_macs, depthwise_macs, depthwise_params,
                      pointwise_hw, pointwise_macs, require_plain)
from .registry import ConvSpec, HyperParam, Method, register_method

HP = HyperParam("fraction", float, low=1e-4, high=1.0, default=0.1, direction=1,
                description="fraction of the virtual weights that are real parameters")
OPTIONS = {"seed": 0, "index": "buffer"}
INDEX_MODES = ("buffer", "recompute")
MASK32 = 0xFFFFFFFF
SIGN_SALT = 0x5BD1E995


def real_weights(virtual: int, hp: float) -> int:
    """K = max(1, floor(hp*M + 0.5)) real weights for M virtual ones (monotone in hp)."""
    return max(1, min(virtual, math.floor(float(hp) * virtual + 0.5)))


def _mul32(x: torch.Tensor, c: int) -> torch.Tensor:
    """(x * c) mod 2^32 for 32-bit x and c, split into 16-bit halves so no int64 product overflows."""
    return (x * (c & 0xFFFF) + (((x * (c >> 16)) & 0xFFFF) << 16)) & MASK32


def mix32(x: torch.Tensor) -> torch.Tensor:
    """lowbias32 (C. Wellons) on int64 tensors holding 32-bit values."""
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def mix32_python(x: int) -> int:
    """Reference :func:`mix32` on a Python int (used by the tests as an independent check)."""
    x ^= x >> 16
    x = (x * 0x7FEB352D) & MASK32
    x ^= x >> 15
    x = (x * 0x846CA68B) & MASK32
    return x ^ (x >> 16)


def layer_seed(spec: ConvSpec, seed: int, salt: str) -> int:
    """A 32-bit per-layer seed from the option ``seed`` and the conv's shape (deterministic, no RNG)."""
    value = int(seed) & MASK32
    for part in (salt, spec.in_channels, spec.out_channels, *spec.kernel_size):
        number = sum(ord(c) * 31 ** i for i, c in enumerate(part)) if isinstance(part, str) else int(part)
        value = mix32_python((value ^ (number & MASK32)) * 0x9E3779B1 & MASK32)
    return value


def hash_codes(count: int, real: int, seed: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Packed int32 codes for flat indices 0..count-1: h(i) where sign is +1, ~h(i) where it is -1."""
    if count >= 2 ** 31:
        raise ValueError(f"hashed weight with {count} entries is too large (limit 2^31)")
    if torch.device(device).type == "meta":  # shapes only (budget solving, counting): no values to hash
        return torch.empty(count, device=device, dtype=torch.int32)
    bucket, negative = hash_index_sign(count, real, seed, device)
    return torch.where(negative, ~bucket, bucket).to(torch.int32)


def hash_index_sign(count: int, real: int, seed: int, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """(h(i) as int64, sign(i) < 0 as bool) for flat indices 0..count-1: the hash itself, in tensor ops
    an exporter can trace (the exported graph computes the index instead of storing it)."""
    key = torch.arange(count, device=device, dtype=torch.int64) ^ (seed & MASK32)
    a = mix32(key)
    return a % real, (mix32(a ^ SIGN_SALT) & 1).bool()


def hash_python(i: int, real: int, seed: int) -> tuple[int, int]:
    """(h(i), sign(i)) computed in plain Python — the reference the tensor version must match."""
    a = mix32_python((i ^ (seed & MASK32)) & MASK32)
    return a % real, (-1 if mix32_python(a ^ SIGN_SALT) & 1 else 1)


class HashedWeight(nn.Module):
    """A virtual weight of a given shape backed by K real parameters through a fixed hash."""

    def __init__(self, shape: tuple[int, ...], hp: float, seed: int, index: str = "buffer",
                 fan_in: int | None = None) -> None:
        super().__init__()
        if index not in INDEX_MODES:
            raise ValueError(f"index must be one of {INDEX_MODES}, got {index!r}")
        self.shape, self.seed, self.index_mode = tuple(shape), int(seed), index
        self.virtual = math.prod(self.shape)
        self.real = real_weights(self.virtual, hp)
        # Kaiming-uniform bound of the virtual dense weight, so activations start like nn.Conv2d's
        bound = 1.0 / math.sqrt(fan_in or self.shape[1] * math.prod(self.shape[2:]))
        self.weight = nn.Parameter(torch.empty(self.real).uniform_(-bound, bound))
        self._cache = CollapsedCache()
        if index == "buffer":
            # built where the weight is: on the meta device (budget solving, counting) this costs nothing
            codes = hash_codes(self.virtual, self.real, self.seed, self.weight.device)
            self.register_buffer("codes", codes, persistent=False)
        else:
            self.codes = None

    def train(self, mode: bool = True) -> "HashedWeight":
        """Switch mode and drop the cached virtual weight (see :class:`~._collapsed.CollapsedCache`)."""
        self._cache.clear()
        return super().train(mode)

    def forward(self) -> torch.Tensor:
        """The virtual weight tensor (differentiable with respect to the K real weights): gathered every
        forward in training mode with autograd on; in eval mode (or without autograd) gathered once and
        cached until a parameter changes, so a steady-state eval forward is the dense conv it declares
        (the gather of M entries cost more than the 1x1 conv itself: 2.1 of 2.4 ms at 640 channels)."""
        return collapsed_matrix(self, self._cache, self.gather)

    def gather(self) -> torch.Tensor:
        """Build the virtual weight from the K real weights and the hash.

        Under ``torch.export`` the hash is traced into the graph (int64 ops), so the exported file
        stores the K real weights and no index: the runtime folds the gather into a constant at load."""
        if torch.compiler.is_exporting():
            index, negative = hash_index_sign(self.virtual, self.real, self.seed, self.weight.device)
            values = self.weight[index]
            return torch.where(negative, -values, values).view(self.shape)
        codes = self.codes
        if codes is None:
            codes = hash_codes(self.virtual, self.real, self.seed, self.weight.device)
        negative = codes < 0
        index = torch.where(negative, ~codes, codes)
        values = self.weight[index]
        return torch.where(negative, -values, values).view(self.shape)

    def for_export(self) -> None:
        """Drop the index buffer before ``torch.export`` (lowrank.deploy.export calls this on a copy):
        the trace computes the index, and an exported program would otherwise store the unused buffer."""
        if "codes" in self._buffers:
            del self._buffers["codes"]
        self.codes = None

    def extra_repr(self) -> str:
        return f"shape={self.shape}, real={self.real}, seed={self.seed}, index={self.index_mode}"


class HashedConv(SubstituteConv):
    """The whole conv weight (out, in, kh, kw) hashed to K real weights; runs as an ordinary conv."""

    def __init__(self, spec: ConvSpec, hp: float, seed: int = 0, index: str = "buffer") -> None:
        super().__init__("hashed", spec, hp, {"seed": seed, "index": index})
        shape = (spec.out_channels, spec.in_channels, *spec.kernel_size)
        self.hashed = HashedWeight(shape, hp, layer_seed(spec, seed, "hashed"), index)
        self.bias = nn.Parameter(torch.zeros(spec.out_channels)) if spec.bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.spec
        return F.conv2d(x, self.hashed(), self.bias, s.stride, s.padding, s.dilation)


class SepHashedConv(SeparableConv):
    """Depthwise k x k (full, k > 1) then a hashed 1x1 in -> out."""

    def __init__(self, spec: ConvSpec, hp: float, seed: int = 0, index: str = "buffer") -> None:
        super().__init__("sep_hashed", spec, hp, {"seed": seed, "index": index})
        shape = (spec.out_channels, spec.in_channels, 1, 1)
        self.hashed = HashedWeight(shape, hp, layer_seed(spec, seed, "sep_hashed"), index)
        self.bias = nn.Parameter(torch.zeros(spec.out_channels)) if spec.bias else None

    def pointwise(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.hashed(), self.bias)


def build_hashed(spec: ConvSpec, hp: float = HP.default, seed: int = 0, index: str = "buffer") -> HashedConv:
    """HashedNet over the whole conv weight, keeping a fraction ``hp`` of the weights."""
    require_plain(spec, "hashed")
    return HashedConv(spec, HP.validate(hp), seed, index)


def build_sep_hashed(spec: ConvSpec, hp: float = HP.default, seed: int = 0, index: str = "buffer") -> SepHashedConv:
    """Depthwise k x k + HashedNet 1x1 keeping a fraction ``hp`` of the 1x1 weights."""
    require_plain(spec, "sep_hashed")
    return SepHashedConv(spec, HP.validate(hp), seed, index)


def _bias(spec: ConvSpec) -> int:
    return spec.out_channels if spec.bias else 0


def params_hashed(spec: ConvSpec, hp: float, **options) -> int:
    """K = max(1, floor(hp*out*in*kh*kw + 0.5)) (+ out bias)."""
    kh, kw = spec.kernel_size
    return real_weights(spec.out_channels * spec.in_channels * kh * kw, hp) + _bias(spec)


def macs_hashed(spec: ConvSpec, hp: float, in_hw: tuple[int, int], **options) -> int:
    """The dense conv's mult-adds: the virtual weight is dense."""
    return conv_macs(spec, in_hw)


def params_sep_hashed(spec: ConvSpec, hp: float, **options) -> int:
    """in*kh*kw (k > 1) + max(1, floor(hp*in*out + 0.5)) (+ out bias)."""
    return depthwise_params(spec) + real_weights(spec.in_channels * spec.out_channels, hp) + _bias(spec)


def macs_sep_hashed(spec: ConvSpec, hp: float, in_hw: tuple[int, int], **options) -> int:
    """Depthwise + dense pointwise out_h*out_w*in*out."""
    return depthwise_macs(spec, in_hw) + pointwise_macs(spec.in_channels, spec.out_channels, pointwise_hw(spec, in_hw))


PAPER = "Chen et al. 2015, Compressing Neural Networks with the Hashing Trick"
register_method(Method(
    name="hashed",
    description="HashedNet over the whole conv weight: hp = fraction of weights kept as real parameters",
    build=build_hashed, params=params_hashed, macs=macs_hashed, hp=HP, options=dict(OPTIONS), paper=PAPER,
))
register_method(Method(
    name="sep_hashed",
    description="depthwise k x k + HashedNet 1x1: hp = fraction of the 1x1 weights kept",
    build=build_sep_hashed, params=params_sep_hashed, macs=macs_sep_hashed, hp=HP, options=dict(OPTIONS),
    paper=PAPER,
))
