"""Shape-only evaluation on the ``meta`` device without PyTorch's Python reference kernels.

Counting and budget solving build and run networks on ``meta`` (shapes, no data). Many meta
kernels are Python decompositions (``torch._refs``): a random initialisation, a ReLU or a batch
norm costs about a millisecond each, and a DARTS network has thousands of them, so a solve spent
seconds computing nothing. Inside :class:`ShapesOnly`, on meta tensors only, initialisations and
other in-place fills return their tensor untouched, and shape-preserving activations and batch
norm return an empty tensor of their input's shape. Tensors on any other device are not touched
(the mode passes every call through), so it is safe around code that may run on a real device.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

# in-place ops that never change their tensor's shape: on meta, nothing to compute
_IN_PLACE = frozenset({
    torch.Tensor.uniform_, torch.Tensor.normal_, torch.Tensor.zero_, torch.Tensor.fill_,
    torch.Tensor.copy_, torch.Tensor.erfinv_, torch.Tensor.clamp_, torch.Tensor.mul_,
    torch.Tensor.add_, torch.Tensor.sub_, torch.Tensor.div_, torch.Tensor.exponential_,
    torch.Tensor.bernoulli_, torch.Tensor.random_, torch.Tensor.relu_, torch.relu_,
    # torch.nn.init's initialisers dispatch as themselves before touching the tensor
    *(getattr(torch.nn.init, name) for name in (
        "uniform_", "normal_", "trunc_normal_", "constant_", "ones_", "zeros_", "xavier_uniform_",
        "xavier_normal_", "kaiming_uniform_", "kaiming_normal_", "orthogonal_") if hasattr(torch.nn.init, name)),
})
# out-of-place ops whose output has their first argument's shape
_SAME_SHAPE = frozenset({
    F.relu, F.relu6, F.hardtanh, F.silu, F.gelu, F.leaky_relu, F.elu, F.batch_norm,
    torch.relu, torch.Tensor.relu, torch.sigmoid, torch.Tensor.sigmoid, torch.tanh, torch.Tensor.tanh,
})


def _on_meta(value) -> bool:
    return getattr(value, "is_meta", False) is True


class ShapesOnly(TorchFunctionMode):
    """Within this mode, value-only work on meta tensors is skipped (see the module docstring)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        # the tensor acted on: the first argument, or a keyword (torch.nn.init passes tensor=...)
        first = args[0] if args else kwargs.get("tensor", kwargs.get("input"))
        if _on_meta(first):
            if func in _IN_PLACE:
                return first
            if func in _SAME_SHAPE:
                return first if kwargs.get("inplace") else first.new_empty(first.shape)
        return func(*args, **kwargs)
