"""Exact parameter and analytic mult-add counts of a network, per layer and in total.

Parameters are the model's unique parameters (a tied or shared tensor counts once).
Mult-adds follow the literature's convention for one image: a convolution costs
out_h * out_w * out_ch * (in_ch / groups) * kh * kw, a linear layer in * out per input row,
a substitute layer what its method declares (``SubstituteConv.macs``); batch norm, ReLU,
pooling, bias additions and every other module count 0 (research notes 001, 16th Oct 2018:
count a layer once per position it is applied at). ``nn.Conv2d``, ``nn.Linear`` and
``SubstituteConv`` are leaf units: a substitute's internals are not counted again.

Spatial sizes come from forward hooks while one input goes through the model. The pass runs
on the ``meta`` device (shapes only, no arithmetic), so WRN-50-2 counts in about a second;
a model that cannot run on meta falls back to a real batch of one under ``no_grad``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from .methods._common import SubstituteConv, conv_macs
from .methods.registry import ConvSpec

LEAF_TYPES = (SubstituteConv, nn.Conv2d, nn.Linear)


@dataclass
class LayerCount:
    """One row of the per-layer table."""

    name: str
    type: str
    params: int
    macs: int = 0
    calls: int = 0  # forward calls in the counting pass (a reused module's mult-adds add up per call)
    in_shape: tuple[int, ...] | None = None  # of the first call, batch dimension dropped
    out_shape: tuple[int, ...] | None = None


@dataclass
class CountReport:
    """Totals (unique parameters, per-image mult-adds) and the per-layer rows."""

    params: int
    macs: int
    layers: list[LayerCount] = field(default_factory=list)
    input_shape: tuple[int, ...] | None = None


def unique_params(model: nn.Module) -> int:
    """Number of unique parameter entries (``parameters()`` already de-duplicates tied tensors)."""
    return sum(p.numel() for p in model.parameters())


def meta_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose parameters and buffers live on ``meta``: no data is copied."""
    memo: dict[int, object] = {}
    for p in model.parameters():
        memo[id(p)] = nn.Parameter(torch.empty_like(p, device="meta"), requires_grad=p.requires_grad)
    for b in model.buffers():
        memo[id(b)] = torch.empty_like(b, device="meta")
    return copy.deepcopy(model, memo)


def _is_leaf(module: nn.Module) -> bool:
    """Counted as one unit: convs, linears, substitutes, and any module that declares
    its own analytic cost with ``count_macs(x)`` (e.g. the stacked-ACDC linear layer)."""
    return isinstance(module, LEAF_TYPES) or callable(getattr(module, "count_macs", None))


def _leaf_macs(module: nn.Module, x: torch.Tensor) -> int:
    """Mult-adds of one call of a leaf unit on a batch-of-one input ``x``."""
    if callable(getattr(module, "count_macs", None)):
        return int(module.count_macs(x))
    if isinstance(module, SubstituteConv):
        return module.macs(tuple(x.shape[-2:]))
    if isinstance(module, nn.Conv2d):
        return conv_macs(ConvSpec.from_conv(module), tuple(x.shape[-2:]))
    rows = x.numel() // x.shape[-1]  # nn.Linear: every leading position is one in x out product
    return rows * module.in_features * module.out_features


def _rows(model: nn.Module) -> tuple[dict[str, LayerCount], dict[int, LayerCount]]:
    """One row per leaf unit and per other module that owns parameters directly (macs 0)."""
    rows: dict[str, LayerCount] = {}
    by_id: dict[int, LayerCount] = {}
    inside: set[int] = set()  # modules within a leaf unit
    for name, module in model.named_modules():
        if id(module) in inside:
            continue
        if _is_leaf(module):
            inside.update(id(m) for m in module.modules())
            params = unique_params(module)
        else:
            params = sum(p.numel() for p in module.parameters(recurse=False))
            if params == 0:
                continue
        row = LayerCount(name or "(root)", type(module).__name__, params)
        rows[name] = by_id[id(module)] = row
    return rows, by_id


def count_model(model: nn.Module, input_shape: tuple[int, ...] | None = None) -> CountReport:
    """Count ``model``: unique parameters and, given ``input_shape`` (C, H, W), per-image mult-adds.

    The model's train/eval mode is left as it was (the pass runs in eval mode, so auxiliary
    heads and drop-path do not run).
    """
    rows, by_id = _rows(model)
    report = CountReport(params=unique_params(model), macs=0, layers=list(rows.values()),
                         input_shape=tuple(input_shape) if input_shape else None)
    if input_shape is None:
        return report

    def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        row = by_id[id(module)]
        x = inputs[0] if inputs else None
        if row.calls == 0:
            row.in_shape = tuple(x.shape[1:]) if isinstance(x, torch.Tensor) else None
            row.out_shape = tuple(output.shape[1:]) if isinstance(output, torch.Tensor) else None
        row.calls += 1
        if _is_leaf(module):
            row.macs += _leaf_macs(module, x[:1])

    def run(net: nn.Module, device: torch.device) -> None:
        handles = [m.register_forward_hook(hook) for m in net.modules() if id(m) in by_id]
        was_training = net.training
        try:
            net.eval()
            with torch.no_grad():
                net(torch.zeros((1, *input_shape), device=device))
        finally:
            net.train(was_training)
            for handle in handles:
                handle.remove()

    try:
        on_meta = all(t.device.type == "meta" for t in (*model.parameters(), *model.buffers()))
        copied = model if on_meta else meta_copy(model)
        by_id.update({id(c): by_id[id(o)] for o, c in zip(model.modules(), copied.modules()) if id(o) in by_id})
        run(copied, torch.device("meta"))
    except (RuntimeError, NotImplementedError, TypeError):
        # a layer that cannot run on meta (data-dependent code): count with one real image
        for row in report.layers:
            row.macs, row.calls, row.in_shape, row.out_shape = 0, 0, None, None
        run(model, _device(model))
    report.macs = sum(row.macs for row in report.layers)
    return report


def _device(model: nn.Module) -> torch.device:
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")
