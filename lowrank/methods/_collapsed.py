"""The collapsed-matrix path shared by the FFT-structured methods (AFDF, block-diagonal ACDC).

A stack of diagonal and transform layers is one linear map, so it can run either as the
transform itself (``fast``: O(N log N) per position) or as its effective ``in x out`` matrix
applied as a 1x1 conv (``collapse``). Counting follows what runs: a method declares
``min(fast cost, in*out)`` mult-adds per position, and in eval mode the module runs exactly
that path. Without autograd (``torch.no_grad()``/``inference_mode``, the usual evaluation)
the collapsed matrix is cached and rebuilt only when a parameter changes (its ``_version``
or storage changes); with autograd on it is rebuilt differentiably each forward. In training
mode the path is the cheaper one for the actual number of positions (the build, about
``in * fast cost``, is paid once per forward and spread over the batch).
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn

# A GEMM mult-add runs several times faster than an FFT-path mult-add in PyTorch (one BLAS call
# against a dozen small kernels per layer); used only to pick between equivalent paths.
GEMM_ADVANTAGE = 16.0


def training_path(positions: int, in_features: int, out_features: int, fast_per_position: int) -> str:
    """'collapse' or 'fast', whichever is cheaper in training for ``positions`` vectors."""
    fast = positions * fast_per_position
    collapse = in_features * fast_per_position + positions * in_features * out_features / GEMM_ADVANTAGE
    return "collapse" if collapse <= fast else "fast"


def eval_path(in_features: int, out_features: int, fast_per_position: int) -> str:
    """The path a declared count of ``min(fast, in*out)`` per position describes."""
    return "collapse" if in_features * out_features <= fast_per_position else "fast"


class CollapsedCache:
    """The effective matrix of ``module`` built once per parameter state, for no-grad forwards."""

    def __init__(self) -> None:
        self._key: tuple | None = None
        self._matrix: torch.Tensor | None = None

    def get(self, module: nn.Module, build: Callable[[], torch.Tensor]) -> torch.Tensor:
        """``build()`` under no_grad, reused while no parameter of ``module`` has changed."""
        key = tuple((p.device, p.dtype, p.data_ptr(), p._version) for p in module.parameters())
        if key != self._key or self._matrix is None:
            with torch.no_grad():
                self._matrix = build()
            self._key = key
        return self._matrix


def collapsed_matrix(module: nn.Module, cache: CollapsedCache, build: Callable[[], torch.Tensor]) -> torch.Tensor:
    """The effective matrix: cached when no gradient can flow, else built differentiably."""
    if torch.is_grad_enabled() and any(p.requires_grad for p in module.parameters()):
        return build()
    return cache.get(module, build)
