"""Shape-only evaluation on the ``meta`` device without PyTorch's Python reference kernels.

Counting and budget solving build and run networks on ``meta`` (shapes, no data). Many meta
kernels are Python decompositions (``torch._refs``): a random initialisation, a ReLU or a batch
norm costs about a millisecond each, and a DARTS network has thousands of them, so a solve spent
seconds computing nothing (and the first such kernel imports ``torch._dynamo``, over a second of a
``lowrank count``). Inside :class:`ShapesOnly`, on meta tensors only, initialisations and other
in-place fills return their tensor untouched, shape-preserving activations and batch norm return an
empty tensor of their input's shape, binary elementwise ops one of the broadcast shape, pooling,
convolutions and linear layers one of their output size (a conv's meta kernel imports
sympy, half a second of every ``lowrank count``). Tensors on any other device are not touched
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


# binary elementwise ops (a residual add, a scaling): the broadcast shape of their operands
_BINARY = frozenset({
    torch.Tensor.add, torch.Tensor.sub, torch.Tensor.mul, torch.Tensor.div,
    torch.add, torch.sub, torch.mul, torch.div,
})


# comparisons (a mask such as ``partner != 0`` in the ACDC spectrum): a bool tensor of the broadcast shape
_COMPARE = frozenset({
    torch.Tensor.eq, torch.Tensor.ne, torch.Tensor.lt, torch.Tensor.le, torch.Tensor.gt, torch.Tensor.ge,
    torch.eq, torch.ne, torch.lt, torch.le, torch.gt, torch.ge,
})

_ADAPTIVE_POOL = frozenset({F.adaptive_avg_pool2d, F.adaptive_max_pool2d})


def _adaptive_shape(x: torch.Tensor, output_size) -> tuple[int, ...]:
    """The output shape of a 2-d adaptive pooling to ``output_size`` (an int, or a pair with None
    for 'keep the input size')."""
    size = (output_size, output_size) if isinstance(output_size, int) else tuple(output_size)
    return (*x.shape[:-2], *(x.shape[-2 + i] if s is None else int(s) for i, s in enumerate(size)))


def _conv2d_shape(x: torch.Tensor, weight: torch.Tensor, stride=1, padding=0, dilation=1) -> tuple[int, ...]:
    """The output shape of ``torch.conv2d`` (PyTorch's formula; padding 'same' keeps the size)."""
    pair = lambda v: (v, v) if isinstance(v, int) else tuple(v)  # noqa: E731
    stride, dilation = pair(stride), pair(dilation)
    if isinstance(padding, str):
        if padding == "same":
            return (x.shape[0], weight.shape[0], *x.shape[-2:])
        padding = (0, 0)
    padding = pair(padding)
    size = tuple((n + 2 * p - d * (k - 1) - 1) // s + 1
                 for n, p, d, k, s in zip(x.shape[-2:], padding, dilation, weight.shape[-2:], stride))
    return (x.shape[0], weight.shape[0], *size)


def _broadcast(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, ...] | None:
    """NumPy broadcasting of two shapes (None when they do not broadcast: let torch say why)."""
    out = []
    for x, y in zip(reversed((1,) * (len(b) - len(a)) + tuple(a)), reversed((1,) * (len(a) - len(b)) + tuple(b))):
        if x != y and 1 not in (x, y):
            return None
        out.append(max(x, y) if 1 not in (x, y) else x * y)
    return tuple(reversed(out))


_POOL_ARGS = {  # positional parameters after the input, as each function names them
    F.max_pool2d: ("kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices"),
    F.avg_pool2d: ("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad", "divisor_override"),
}
_RANDOM_FACTORIES = frozenset({torch.randn, torch.rand})  # on meta: an empty tensor of the size
_HANDLED = _IN_PLACE | _SAME_SHAPE | _ADAPTIVE_POOL | _BINARY | _COMPARE | set(_POOL_ARGS) | _RANDOM_FACTORIES | \
    {torch.conv2d, F.linear, torch.cat, torch.stack}


def _random_on_meta(func, args, kwargs):
    """``torch.randn``/``rand`` made on the meta device (named, or the default device): no draws."""
    device = kwargs.get("device")
    on_meta = torch.device(device).type == "meta" if device is not None else \
        torch.get_default_device().type == "meta"
    if not on_meta:
        return func(*args, **kwargs)
    return torch.empty(*args, **{k: v for k, v in kwargs.items() if k not in ("generator",)})


def _pool_shape(x: torch.Tensor, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
                **_ignored) -> tuple[int, ...]:
    """The output shape of a 2-d max/avg pooling (PyTorch's formula, ceil_mode included)."""
    pair = lambda v: (v, v) if isinstance(v, int) else tuple(v)  # noqa: E731
    kernel = pair(kernel_size)
    stride = kernel if stride is None or (not isinstance(stride, int) and len(stride) == 0) else pair(stride)
    padding, dilation = pair(padding), pair(dilation)
    size = []
    for n, k, s, p, d in zip(x.shape[-2:], kernel, stride, padding, dilation):
        span = n + 2 * p - d * (k - 1) - 1
        out = (span + (s - 1 if ceil_mode else 0)) // s + 1
        if ceil_mode and (out - 1) * s >= n + p:  # the last window must start inside the input
            out -= 1
        size.append(out)
    return (*x.shape[:-2], *size)


def _sequence_on_meta(args, kwargs) -> tuple[list[torch.Tensor], int] | None:
    """(tensors, dim) of a ``torch.cat``/``torch.stack`` call this module answers: a non-empty
    sequence of meta tensors of one dtype and an int ``dim``; None for any other form."""
    tensors = list(args[0] if args else kwargs["tensors"])
    dim = args[1] if len(args) > 1 else kwargs.get("dim", 0)
    if (not tensors or any(not _on_meta(t) for t in tensors) or len({t.dtype for t in tensors}) != 1
            or not isinstance(dim, int) or set(kwargs) - {"tensors", "dim"}):
        return None
    return tensors, dim


def _cat(func, args, kwargs):
    """``torch.cat`` of meta tensors of one rank and dtype: the sizes along ``dim`` add up."""
    found = _sequence_on_meta(args, kwargs)
    if found is None or len({t.dim() for t in found[0]}) != 1:
        return func(*args, **kwargs)
    tensors, dim = found
    shape = list(tensors[0].shape)
    dim = dim % len(shape)
    if any(tuple(t.shape[:dim]) + tuple(t.shape[dim + 1:]) != tuple(shape[:dim] + shape[dim + 1:]) for t in tensors):
        return func(*args, **kwargs)  # mismatched shapes: let torch say why
    shape[dim] = sum(t.shape[dim] for t in tensors)
    return tensors[0].new_empty(shape)


def _stack(func, args, kwargs):
    """``torch.stack`` of meta tensors of one shape and dtype: a new axis of their number at ``dim``."""
    found = _sequence_on_meta(args, kwargs)
    if found is None or len({tuple(t.shape) for t in found[0]}) != 1:
        return func(*args, **kwargs)  # mismatched shapes or a form not handled here: torch's own answer
    tensors, dim = found
    shape = list(tensors[0].shape)
    if not -len(shape) - 1 <= dim <= len(shape):
        return func(*args, **kwargs)  # let torch say why
    shape.insert(dim % (len(shape) + 1), len(tensors))
    return tensors[0].new_empty(shape)


def x_is_4d(value: torch.Tensor) -> bool:
    """A batched image tensor (N, C, H, W): the conv shape rule below is written for it."""
    return value.dim() == 4


def _on_meta(value) -> bool:
    return getattr(value, "is_meta", False) is True


class ShapesOnly(TorchFunctionMode):
    """Within this mode, value-only work on meta tensors is skipped (see the module docstring)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func not in _HANDLED:  # first, and cheaply: every tensor property read comes through here too
            return func(*args, **kwargs)
        if func is torch.cat:
            return _cat(func, args, kwargs)
        if func is torch.stack:
            return _stack(func, args, kwargs)
        if func in _RANDOM_FACTORIES:
            return _random_on_meta(func, args, kwargs)
        # the tensor acted on: the first argument, or a keyword (torch.nn.init passes tensor=...)
        first = args[0] if args else kwargs.get("tensor", kwargs.get("input"))
        if _on_meta(first):
            if func in _IN_PLACE:
                return first
            if func in _SAME_SHAPE:
                return first if kwargs.get("inplace") else first.new_empty(first.shape)
            if func in _ADAPTIVE_POOL and not kwargs.get("return_indices"):
                size = args[1] if len(args) > 1 else kwargs.get("output_size")
                return first.new_empty(_adaptive_shape(first, size))
            if func in _POOL_ARGS:
                given = dict(zip(_POOL_ARGS[func], args[1:])) | kwargs
                if not given.get("return_indices") and given.get("divisor_override") is None:
                    return first.new_empty(_pool_shape(first, **given))
            if func is torch.conv2d and x_is_4d(first):
                names = ("weight", "bias", "stride", "padding", "dilation")
                given = dict(zip(names, args[1:])) | {k: v for k, v in kwargs.items() if k in names}
                given.pop("bias", None)
                return first.new_empty(_conv2d_shape(first, **given))
            if func is F.linear:
                weight = args[1] if len(args) > 1 else kwargs["weight"]
                return first.new_empty((*first.shape[:-1], weight.shape[0]))
            if func in _BINARY | _COMPARE and len(args) >= 2 and not kwargs:
                other = args[1]
                shape = first.shape if not isinstance(other, torch.Tensor) else \
                    _broadcast(first.shape, other.shape) if _on_meta(other) else None
                if shape is not None:
                    dtype = torch.bool if func in _COMPARE else torch.result_type(first, other)
                    return first.new_empty(shape, dtype=dtype)
        return func(*args, **kwargs)
