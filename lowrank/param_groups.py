"""Optimizer parameter groups with compression-scaled weight decay.

Research notes 002 (12th-14th Dec 2018): with low-rank substitutes, weight decay scaled by
each layer's compression factor trained better than the plain setting, and the notes found it
essential for some methods. Each substituted layer's parameters get
``weight_decay * method.params(spec, hp) / spec.dense_params``; everything else gets
``weight_decay``. Every group carries a ``"name"`` for logging.
"""

from __future__ import annotations

from typing import Any

import torch.nn as nn

from .methods import get_method
from .methods._common import SubstituteConv

NORM_TYPES = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, nn.LocalResponseNorm)


def compression(layer: SubstituteConv) -> float:
    """Parameters of the substitute over those of the dense conv it replaced (its method's declaration)."""
    method = get_method(layer.method_name)
    return method.params(layer.spec, layer.hp, **layer.options) / layer.spec.dense_params


def param_groups(model: nn.Module, weight_decay: float, scale_by_compression: bool = True,
                 no_decay_bn_bias: bool = False) -> list[dict[str, Any]]:
    """Groups for ``torch.optim`` covering every parameter of ``model`` exactly once.

    One group per substituted layer (weight decay scaled by its compression when
    ``scale_by_compression``), one ``"default"`` group, and with ``no_decay_bn_bias`` a
    ``"no_decay"`` group (weight decay 0) for normalisation-layer parameters and biases.
    Empty groups are left out; a shared parameter goes to the first group that meets it.
    """
    seen: set[int] = set()
    groups: dict[str, dict[str, Any]] = {}

    def add(group: str, decay: float, param: nn.Parameter) -> None:
        if id(param) in seen:
            return
        seen.add(id(param))
        groups.setdefault(group, {"name": group, "params": [], "weight_decay": decay})["params"].append(param)

    def no_decay(module: nn.Module, param_name: str) -> bool:
        return no_decay_bn_bias and (isinstance(module, NORM_TYPES) or param_name == "bias")

    substitutes = [(name, m) for name, m in model.named_modules() if isinstance(m, SubstituteConv)]
    inner = {id(m) for _, layer in substitutes for m in layer.modules()}
    for name, layer in substitutes:
        decay = weight_decay * compression(layer) if scale_by_compression else weight_decay
        for module in layer.modules():
            for param_name, param in module.named_parameters(recurse=False):
                add("no_decay" if no_decay(module, param_name) else name or "(root)", decay, param)
    for module in model.modules():
        if id(module) in inner:
            continue
        for param_name, param in module.named_parameters(recurse=False):
            add("no_decay" if no_decay(module, param_name) else "default", weight_decay, param)
    if "no_decay" in groups:
        groups["no_decay"]["weight_decay"] = 0.0
    return list(groups.values())
