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
a model that cannot run on meta falls back to a real batch of one under ``no_grad``. On meta a
substitute does not run its layers: its figures are declared per input shape, so it only
returns the conv's output shape (the executed cost is checked against the declaration in tests).

Training-only modules: a model may list submodules that only run in training (an auxiliary
head) in ``model.training_only_modules`` (name -> label). ``params`` is then the deployable
network's count (what runs at test time, as the DARTS code's ``count_parameters_in_MB``, which
skips ``auxiliary``) and ``training_only_params`` the rest; a parameter shared with the
deployable network is deployable. Eval mult-adds never include them (they do not run).

:func:`count_training` counts what one *training* forward executes, per image at a batch size:
every layer in training mode (auxiliary heads run), substitutes by their ``train_macs`` (a
collapsed-matrix build or a factor reconstruction runs once per forward and is divided by the
batch size).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from .meta import ShapesOnly
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
    training_only: bool = False  # inside one of the model's training-only modules
    in_shape: tuple[int, ...] | None = None  # of the first call, batch dimension dropped
    out_shape: tuple[int, ...] | None = None


@dataclass
class CountReport:
    """Totals (unique parameters, per-image mult-adds) and the per-layer rows."""

    params: int  # of the deployable network (training-only modules excluded)
    macs: int
    layers: list[LayerCount] = field(default_factory=list)
    input_shape: tuple[int, ...] | None = None
    training_only_params: int = 0
    training_only: list[dict] = field(default_factory=list)  # per module: module, label, params
    batch_size: int = 1  # images per forward of the counting pass (count_training)


def unique_params(model: nn.Module) -> int:
    """Number of unique parameter entries (``parameters()`` already de-duplicates tied tensors)."""
    return sum(p.numel() for p in model.parameters())


def training_only_modules(model: nn.Module) -> dict[str, str]:
    """The model's training-only submodules that exist (name -> label), from
    ``model.training_only_modules``; empty for a model that declares none."""
    declared = getattr(model, "training_only_modules", None) or {}
    names = dict(model.named_modules())
    return {name: str(label) for name, label in dict(declared).items() if name in names}


def in_modules(name: str, prefixes) -> bool:
    """Whether the qualified ``name`` is one of ``prefixes`` or inside one."""
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def deployable_param_ids(model: nn.Module) -> set[int]:
    """ids of the parameters the deployed network uses: every parameter reachable under a name
    outside the training-only modules (a tied parameter is deployable if any of its names is)."""
    only = training_only_modules(model)
    return {id(p) for name, p in model.named_parameters(remove_duplicate=False) if not in_modules(name, only)}


def split_params(model: nn.Module) -> tuple[int, int]:
    """(deployable, training-only) unique parameter entries."""
    deploy = deployable_param_ids(model)
    total = {id(p): p.numel() for p in model.parameters()}
    kept = sum(n for key, n in total.items() if key in deploy)
    return kept, sum(total.values()) - kept


def training_only_breakdown(model: nn.Module) -> list[dict]:
    """One entry per training-only module: its name, label and the parameters only it holds."""
    deploy, seen, out = deployable_param_ids(model), set(), []
    for name, label in training_only_modules(model).items():
        own = {id(p): p.numel() for p in model.get_submodule(name).parameters()
               if id(p) not in deploy and id(p) not in seen}
        seen.update(own)
        out.append({"module": name, "label": label, "params": sum(own.values())})
    return out


def meta_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose parameters and buffers live on ``meta``: no data is copied."""
    memo: dict[int, object] = {}
    # torch.empty, not empty_like: on meta the latter is a Python reference kernel whose first call
    # imports sympy (half a second of a budget solve); shapes and dtypes are all a count needs
    for p in model.parameters():
        memo[id(p)] = nn.Parameter(torch.empty(p.shape, dtype=p.dtype, device="meta"), requires_grad=p.requires_grad)
    for b in model.buffers():
        memo[id(b)] = torch.empty(b.shape, dtype=b.dtype, device="meta")
    return copy.deepcopy(model, memo)


def _is_leaf(module: nn.Module) -> bool:
    """Counted as one unit: convs, linears, substitutes, and any module that declares
    its own analytic cost with ``count_macs(x)`` (e.g. the stacked-ACDC linear layer)."""
    return isinstance(module, LEAF_TYPES) or callable(getattr(module, "count_macs", None))


def _leaf_macs(module: nn.Module, x: torch.Tensor, output: torch.Tensor | None = None) -> int:
    """Mult-adds of one call of a leaf unit on a batch-of-one input ``x`` (``output``: what it returned)."""
    if callable(getattr(module, "count_macs", None)):
        return int(module.count_macs(x))
    if isinstance(module, SubstituteConv):
        return module.macs(tuple(x.shape[-2:]))
    if isinstance(module, nn.Conv2d):
        if isinstance(output, torch.Tensor):  # the executed output size (asymmetric 'same' padding too)
            kh, kw = module.kernel_size
            per_position = module.out_channels * (module.in_channels // module.groups) * kh * kw
            return output.shape[-2] * output.shape[-1] * per_position
        return conv_macs(ConvSpec.from_conv(module), tuple(x.shape[-2:]))
    rows = x.numel() // x.shape[-1]  # nn.Linear: every leading position is one in x out product
    return rows * module.in_features * module.out_features


def _leaf_train_macs(module: nn.Module, x: torch.Tensor, output: torch.Tensor | None = None) -> int:
    """Mult-adds of one training-mode call of a leaf unit on the whole batch ``x``."""
    if callable(getattr(module, "count_train_macs", None)):
        return int(module.count_train_macs(x))
    if isinstance(module, SubstituteConv):
        return int(module.train_macs(x))
    return x.shape[0] * _leaf_macs(module, x[:1], output)


def _rows(model: nn.Module) -> tuple[dict[str, LayerCount], dict[int, LayerCount]]:
    """One row per leaf unit and per other module that owns parameters directly (macs 0)."""
    rows: dict[str, LayerCount] = {}
    by_id: dict[int, LayerCount] = {}
    inside: set[int] = set()  # modules within a leaf unit
    only = training_only_modules(model)
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
        row = LayerCount(name or "(root)", type(module).__name__, params, training_only=in_modules(name, only))
        rows[name] = by_id[id(module)] = row
    return rows, by_id


def count_model(model: nn.Module, input_shape: tuple[int, ...] | None = None) -> CountReport:
    """Count ``model``: unique parameters and, given ``input_shape`` (C, H, W), per-image mult-adds.

    The model's train/eval mode is left as it was (the pass runs in eval mode, so auxiliary
    heads and drop-path do not run). ``params`` excludes the training-only modules.
    """
    return _count(model, input_shape, training=False, batch_size=1)


def count_training(model: nn.Module, input_shape: tuple[int, ...], batch_size: int) -> CountReport:
    """Per-image mult-adds of one training forward on a batch of ``batch_size`` (auxiliary heads
    run; per-forward matrix builds and reconstructions are divided by ``batch_size``, rounded)."""
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    return _count(model, input_shape, training=True, batch_size=int(batch_size))


def _count(model: nn.Module, input_shape: tuple[int, ...] | None, training: bool, batch_size: int) -> CountReport:
    rows, by_id = _rows(model)
    deployable, train_only = split_params(model)
    report = CountReport(params=deployable, macs=0, layers=list(rows.values()),
                         input_shape=tuple(input_shape) if input_shape else None,
                         training_only_params=train_only, training_only=training_only_breakdown(model),
                         batch_size=batch_size)
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
            row.macs += _leaf_train_macs(module, x, output) if training else _leaf_macs(module, x[:1], output)

    def run(net: nn.Module, device: torch.device) -> None:
        handles = [m.register_forward_hook(hook) for m in net.modules() if id(m) in by_id]
        # on meta only shapes flow: a substitute's declared figures need its input shape alone, so it
        # answers with its output shape instead of running (ACDC's FFT stack on meta cost seconds)
        stubbed = [m for m in net.modules() if isinstance(m, SubstituteConv)] if device.type == "meta" else []
        for module in stubbed:
            module.forward = _shape_only(module)
        was_training = net.training
        try:
            net.train(training)
            with torch.no_grad(), ShapesOnly():
                net(torch.zeros((batch_size, *input_shape), device=device))
        finally:
            net.train(was_training)
            for handle in handles:
                handle.remove()
            for module in stubbed:
                del module.forward

    try:
        on_meta = all(t.device.type == "meta" for t in (*model.parameters(), *model.buffers()))
        copied = model if on_meta else meta_copy(model)
        by_id.update({id(c): by_id[id(o)] for o, c in zip(model.modules(), copied.modules()) if id(o) in by_id})
        run(copied, torch.device("meta"))
    except (RuntimeError, NotImplementedError, TypeError):
        # a layer that cannot run on meta (data-dependent code): count with real images
        for row in report.layers:
            row.macs, row.calls, row.in_shape, row.out_shape = 0, 0, None, None
        if training:  # a training pass updates batch-norm statistics: count on a copy
            copied = copy.deepcopy(model)
            by_id.update({id(c): by_id[id(o)] for o, c in zip(model.modules(), copied.modules()) if id(o) in by_id})
            run(copied, _device(model))
        else:
            run(model, _device(model))
    if training:  # per image: the batch's total over its images (builds spread over the batch)
        for row in report.layers:
            row.macs = (row.macs + batch_size // 2) // batch_size
    report.macs = sum(row.macs for row in report.layers)
    return report


def _shape_only(module: SubstituteConv):
    """A forward for ``module`` that returns an empty output of the conv's shape (meta counting)."""
    spec = module.spec

    def forward(x: torch.Tensor) -> torch.Tensor:
        return x.new_empty((x.shape[0], spec.out_channels, *spec.out_hw(tuple(x.shape[-2:]))))

    return forward


def _device(model: nn.Module) -> torch.device:
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")
