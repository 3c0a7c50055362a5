"""The collapsible structured linear shared by ACDC, AFDF and block-diagonal ACDC.

A stack of diagonal and transform layers is one linear map, so it can run either as the
transform itself (``fast``: O(N log N) per position) or as its effective ``in x out`` matrix
applied as a 1x1 conv (``collapse``). :class:`CollapsibleLinear` holds what the three methods
share: zero-padding to ``N = max(in, out)``, the two paths, the cache, and the counts.

Counting follows what runs. The declared (eval) cost per position is the counted path's:
``min(fast cost, in*out)`` with ``path="auto"`` (the default), or the forced path's cost, and
in eval mode the module runs exactly that path. In eval mode (or without autograd) the
collapsed matrix is cached and rebuilt only when a parameter or buffer changes (its ``_version``
or storage) or the mode switches, so a steady-state eval forward executes the declared
mult-adds and nothing else, also with autograd on (the gradient then rebuilds the matrix in
backward); in training mode with autograd on it is rebuilt differentiably each forward. In
training mode ``auto`` takes the path a wall-clock model says is faster for the actual number
of positions; :meth:`CollapsibleLinear.batch_macs` says what
that executes, including the matrix build (paid once per forward, i.e. once per batch), which
``lowrank count --train`` reports spread over the batch.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from .dct import plain_tensors

PATHS = ("auto", "collapse", "fast")
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


def declared_per_position(in_features: int, out_features: int, fast_per_position: int, path: str = "auto") -> int:
    """Declared eval mult-adds per position: the forced path's cost, or min(fast, in*out) for auto."""
    if path not in PATHS:
        raise ValueError(f"path must be one of {PATHS}, got {path!r}")
    collapse = in_features * out_features
    return {"auto": min(fast_per_position, collapse), "collapse": collapse, "fast": fast_per_position}[path]


def chain_product(factors: torch.Tensor) -> torch.Tensor:
    """``factors[..., 0, :, :] @ factors[..., 1, :, :] @ ... @ factors[..., L-1, :, :]`` in pairwise
    (tree) order: log2(L) batched matmuls instead of L sequential ones (few kernels at small N)."""
    while factors.shape[-3] > 1:
        odd = factors.shape[-3] % 2
        pairs = factors[..., 0:factors.shape[-3] - odd:2, :, :] @ factors[..., 1::2, :, :]
        factors = torch.cat([pairs, factors[..., -1:, :, :]], dim=-3) if odd else pairs
    return factors[..., 0, :, :]


class CollapsedCache:
    """The effective matrix of ``module`` built once per parameter state, for eval forwards.

    The key is every parameter's and buffer's device, dtype, storage and ``_version`` (bumped by any
    in-place write autograd sees: optimizer steps, ``load_state_dict``, ``.to()``); writes through
    ``p.data`` bypass the version counter, so the owner also drops the cache on every ``train()`` /
    ``eval()`` switch (:meth:`clear`)."""

    def __init__(self) -> None:
        self._key: tuple | None = None
        self._matrix: torch.Tensor | None = None

    def clear(self) -> None:
        """Forget the matrix: the next eval forward rebuilds it."""
        self._key, self._matrix = None, None

    @staticmethod
    def key(module: nn.Module) -> tuple | None:
        """The state the matrix depends on, or None for tensors without storage (``torch.func``
        transforms swap in batched tensors): those are never cached."""
        try:
            return tuple((t.device, t.dtype, t.data_ptr(), t._version)
                         for t in (*module.parameters(), *module.buffers()))
        except RuntimeError:
            return None

    def get(self, module: nn.Module, build: Callable[[], torch.Tensor], key: tuple) -> torch.Tensor:
        """``build()`` under no_grad, reused while ``key`` (:meth:`key`) is unchanged."""
        if key != self._key or self._matrix is None:
            with plain_tensors():  # not an inference tensor, whatever mode the first eval call ran in
                self._matrix = build()
            self._key = key
        return self._matrix


class _RebuiltInBackward(torch.autograd.Function):
    """The cached matrix in the forward; in the backward the matrix is rebuilt from the parameters and
    differentiated (as activation checkpointing does), so an eval forward with autograd on executes
    only the counted path and still gives the parameters their exact gradients."""

    @staticmethod
    def forward(ctx, build, matrix, *params):  # noqa: D102 - see the class docstring
        ctx.build = build
        ctx.save_for_backward(*params)  # an in-place change before backward is refused by autograd
        return matrix.view_as(matrix)

    @staticmethod
    def backward(ctx, grad):  # noqa: D102
        params = ctx.saved_tensors
        wanted = [p for p in params if p.requires_grad]
        with torch.enable_grad():
            grads = iter(torch.autograd.grad(ctx.build(), wanted, grad, allow_unused=True))
        return (None, None, *(next(grads) if p.requires_grad else None for p in params))


def collapsed_matrix(module: nn.Module, cache: CollapsedCache, build: Callable[[], torch.Tensor]) -> torch.Tensor:
    """The effective matrix: built differentiably every forward in training mode with autograd on;
    in eval mode (or without autograd) the cached one, its gradient, if any, from a rebuild in backward.

    Under ``torch.export`` (ONNX and pt2 export) the build is traced into the graph instead: the
    exported file then stores the compressed parameters, not their expansion, and the runtime
    folds the build into a constant once at load (ONNX Runtime's constant folding), which is what
    the cache does here."""
    if torch.compiler.is_exporting():
        return build()
    params = list(module.parameters())
    needs_grad = torch.is_grad_enabled() and any(p.requires_grad for p in params)
    key = cache.key(module)
    if key is None or (needs_grad and module.training):
        return build()
    matrix = cache.get(module, build, key)
    return _RebuiltInBackward.apply(build, matrix, *params) if needs_grad else matrix


class CollapsibleLinear(nn.Module):
    """A structured ``nn.Linear`` substitute (..., in) -> (..., out) that runs as its transform or
    as its collapsed matrix; subclasses give :meth:`transform`, :meth:`fast_cost` and their
    parameters, and may refine :meth:`build_cost` and :meth:`training_choice`."""

    def __init__(self, in_features: int, out_features: int, layers: int, *, bias: bool = False,
                 path: str = "auto") -> None:
        super().__init__()
        if path not in PATHS:
            raise ValueError(f"path must be one of {PATHS}, got {path!r}")
        if layers < 1:
            raise ValueError(f"layers must be >= 1, got {layers}")
        self.in_features, self.out_features, self.layers = in_features, out_features, int(layers)
        self.n = max(in_features, out_features)
        self.path = path
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None
        self._cache = CollapsedCache()

    def train(self, mode: bool = True) -> "CollapsibleLinear":
        """Switch mode and drop the cached matrix (see :class:`CollapsedCache`)."""
        self._cache.clear()
        return super().train(mode)

    # -- what a subclass declares ---------------------------------------------------------------
    def transform(self, z: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        """The stack on length-N vectors along the last dimension."""
        raise NotImplementedError

    def fast_cost(self) -> int:  # pragma: no cover - abstract
        """Mult-adds of :meth:`transform` on one vector (the method's declared convention)."""
        raise NotImplementedError

    def build_cost(self) -> int:
        """Mult-adds of one :meth:`matrix` call: the ``in`` basis vectors pushed through the transform."""
        return self.in_features * self.fast_cost()

    def training_choice(self, positions: int) -> str:
        """The faster path in training for ``positions`` vectors (``auto`` only)."""
        return training_path(positions, self.in_features, self.out_features, self.fast_cost())

    # -- the two paths ----------------------------------------------------------------------------
    def fast(self, x: torch.Tensor) -> torch.Tensor:
        """The transform path without bias: zero-pad to N, transform, keep the first out_features."""
        if x.is_meta:  # counting and the budget solve: the shape alone (the FFTs' Python meta kernels
            # would import torch._dynamo on first use, a one-off second of a meta count)
            return x.new_empty((*x.shape[:-1], self.out_features))
        # torch.fft needs float32/64 for non-power-of-two sizes (half inputs arrive under autocast)
        z = x if x.dtype in (torch.float32, torch.float64) else x.float()
        if self.n > self.in_features:
            z = F.pad(z, (0, self.n - self.in_features))
        return self.transform(z)[..., :self.out_features].to(x.dtype)

    def matrix(self) -> torch.Tensor:
        """The effective (in_features, out_features) matrix W, so that the stack is x @ W (+ bias)."""
        p = next(self.parameters())
        if p.is_meta:  # shape only, as in :meth:`fast`
            return p.new_empty((self.in_features, self.out_features))
        return self.transform(self.basis())[:, :self.out_features]

    def basis(self) -> torch.Tensor:
        """The ``in`` basis vectors zero-padded to N, on the parameters' device and dtype."""
        p = next(self.parameters())
        return torch.eye(self.in_features, self.n, device=p.device, dtype=p.dtype)

    def weight(self) -> torch.Tensor:
        """The collapsed matrix for this forward (cached in eval mode or without autograd)."""
        return collapsed_matrix(self, self._cache, self.matrix)

    def counted_path(self) -> str:
        """The path an eval forward runs and the declaration counts."""
        if self.path != "auto":
            return self.path
        return eval_path(self.in_features, self.out_features, self.fast_cost())

    def path_for(self, positions: int) -> str:
        """The path this forward takes: forced, the counted one in eval, the faster one in training."""
        if self.path != "auto":
            return self.path
        return self.training_choice(positions) if self.training else self.counted_path()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.path_for(x.numel() // max(1, x.shape[-1])) == "collapse":
            return F.linear(x, self.weight().t().to(x.dtype), self.bias)
        y = self.fast(x)
        return y + self.bias if self.bias is not None else y

    def forward_channels(self, x: torch.Tensor) -> torch.Tensor:
        """The stack on the channels of (B, in, H, W) at every position (the conv's 1x1 stage)."""
        if self.path_for(x.shape[0] * x.shape[2] * x.shape[3]) == "collapse":
            return F.conv2d(x, self.weight().t().to(x.dtype)[:, :, None, None], self.bias)
        y = self.fast(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return y + self.bias[:, None, None] if self.bias is not None else y

    # -- counts -----------------------------------------------------------------------------------
    def per_position_macs(self) -> int:
        """Declared eval mult-adds per vector (the counted path's cost)."""
        return declared_per_position(self.in_features, self.out_features, self.fast_cost(), self.path)

    def count_macs(self, x: torch.Tensor) -> int:
        """Analytic eval mult-adds on input ``x`` (used by lowrank.count): the declared per-vector figure."""
        return x.numel() // x.shape[-1] * self.per_position_macs()

    def batch_macs(self, positions: int) -> int:
        """Mult-adds one forward on ``positions`` vectors executes in the current mode: in training
        (autograd on) the collapsed path pays one matrix build per forward; in eval it uses the
        cached matrix."""
        if self.path_for(positions) == "collapse":
            build = self.build_cost() if self.training else 0  # eval: the cached matrix
            return build + positions * self.in_features * self.out_features
        return positions * self.fast_cost()

    def count_train_macs(self, x: torch.Tensor) -> int:
        """Mult-adds of one training forward on the whole batch ``x`` (lowrank.count --train)."""
        return self.batch_macs(x.numel() // x.shape[-1])
