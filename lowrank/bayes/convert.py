"""Make a model's convolutions and/or linear layers Bayesian (``bayes.layers: all|convs|linears``).

Layers are replaced in place, keeping their current weights as the posterior means (so a trained
dense model can be compressed); convolutions with groups > 1 or non-zero padding modes stay dense.
Registries, not if-chains: ``CONVERTERS`` maps a dense type to its Bayesian layer.
"""

from __future__ import annotations

import fnmatch

import torch.nn as nn

from .layers import BayesConv2d, BayesLayer, BayesLinear

CONVERTERS: dict[type[nn.Module], tuple[str, type[BayesLayer]]] = {
    nn.Conv2d: ("convs", BayesConv2d),
    nn.Linear: ("linears", BayesLinear),
}


def convertible(module: nn.Module) -> bool:
    return type(module) in CONVERTERS and not (isinstance(module, nn.Conv2d)
                                               and (module.groups != 1 or module.padding_mode != "zeros"))


def convert(model: nn.Module, layers: str = "all", skip: list[str] | tuple[str, ...] = (),
            init_logvar: float = -9.0) -> list[str]:
    """Replace the chosen layers of ``model`` by Bayesian ones; returns their names in module order."""
    chosen = []
    for name, module in model.named_modules():
        if not name or not convertible(module):
            continue
        kind = CONVERTERS[type(module)][0]
        if layers != "all" and layers != kind:
            continue
        if any(fnmatch.fnmatchcase(name, pattern) for pattern in skip):
            continue
        chosen.append(name)
    for name in chosen:
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        dense = getattr(parent, attr)
        setattr(parent, attr, CONVERTERS[type(dense)][1].from_dense(dense, init_logvar=init_logvar))
    return chosen


def bayes_layers(model: nn.Module) -> list[tuple[str, BayesLayer]]:
    """The model's Bayesian layers, in module order."""
    return [(name, module) for name, module in model.named_modules() if isinstance(module, BayesLayer)]
