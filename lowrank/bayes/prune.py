"""From log alpha to a smaller network: group masks, kept units per layer, a physically pruned copy.

A group is kept when its log alpha is below the layer's threshold (the tutorial: -2.8, -3, -5 for
LeNet-300-100). Units are then followed through the chain of Bayesian layers, in the order the
forward pass calls them (traced once with a sample input):

  conv -> conv      channel c lives if the first keeps filter c (its z) - the second loses input c
  conv -> linear    (flatten in between) channel c lives if its filter is kept and any of the
                    linear's input features of c is; feature f lives if its z is kept and its channel lives
  linear -> linear  unit j lives if the second keeps input j (its z); the first loses output row j

A connection with another weighted module between (a layer left dense, BatchNorm) removes nothing:
each side keeps its own groups, and the last Bayesian layer keeps all its outputs (pruned filters
stay as zero filters). Removing a dead unit is exact when what lies between the layers maps 0 to 0 channel-wise (ReLU,
max/avg pooling, flatten, dropout): the masked model and the pruned model then agree, which
:func:`lowrank.bayes.report` checks on the test set rather than assumes (BatchNorm, for one, maps
0 to a constant).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn as nn

from .convert import bayes_layers
from .layers import BayesConv2d, BayesLayer, BayesLinear


class NotAChain(ValueError):
    """The Bayesian layers do not form a chain this module can prune physically."""


@dataclass
class Kept:
    """One layer's surviving input and output units (features or channels)."""

    name: str
    layer: BayesLayer
    keep_in: torch.Tensor  # bool over input features / channels
    keep_out: torch.Tensor  # bool over output features / channels
    delivered: torch.Tensor | None = None  # inputs the layer before still produces (None: all of them)

    @property
    def dense_weights(self) -> int:
        return self.layer.weight_mu.numel()

    @property
    def weights(self) -> int:
        per_pair = self.layer.weight_mu[0, 0].numel()  # 1 for linear, kh * kw for conv
        return int(self.keep_in.sum()) * int(self.keep_out.sum()) * per_pair


def layer_thresholds(thresholds: float | list[float], count: int) -> list[float]:
    """One threshold per Bayesian layer (a scalar applies to all)."""
    if isinstance(thresholds, (int, float)):
        return [float(thresholds)] * count
    if len(thresholds) != count:
        raise ValueError(f"bayes.thresholds has {len(thresholds)} values but the model has {count} Bayesian layers")
    return [float(t) for t in thresholds]


@torch.no_grad()
def group_masks(model: nn.Module, thresholds: float | list[float]) -> dict[str, torch.Tensor]:
    """name -> bool mask of kept groups (log alpha < threshold)."""
    layers = bayes_layers(model)
    limits = layer_thresholds(thresholds, len(layers))
    return {name: layer.log_alpha() < limit for (name, layer), limit in zip(layers, limits)}


@torch.no_grad()
def apply_masks(model: nn.Module, masks: dict[str, torch.Tensor]) -> None:
    """Set each Bayesian layer's group mask (1 kept, 0 pruned); evaluation then uses it."""
    for name, layer in bayes_layers(model):
        layer.mask.copy_(masks[name].to(layer.mask.dtype))


def _weighted(module: nn.Module) -> bool:
    """A leaf module with parameters or buffers (a dense conv/linear, BatchNorm): between two Bayesian
    layers it breaks the chain - it does not map a removed unit's 0 to 0, or it expects every unit."""
    if isinstance(module, BayesLayer) or any(True for _ in module.children()):
        return False
    return any(True for _ in module.parameters(recurse=False)) or any(True for _ in module.buffers(recurse=False))


@torch.no_grad()
def call_order(model: nn.Module, sample: torch.Tensor) -> list[str]:
    """The names of the Bayesian layers, and of the other weighted leaf modules (see ``_weighted``)
    between and after them, in the order one forward pass calls them."""
    order: list[str] = []
    handles = [module.register_forward_hook(lambda m, i, o, n=name: order.append(n))
               for name, module in model.named_modules() if isinstance(module, BayesLayer) or _weighted(module)]
    was_training = model.training
    model.eval()
    try:
        model(sample)
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    bayes = {name for name, _ in bayes_layers(model)}
    first = next((i for i, name in enumerate(order) if name in bayes), len(order))
    return order[first:]


@torch.no_grad()
def kept_units(model: nn.Module, masks: dict[str, torch.Tensor], order: list[str]) -> list[Kept]:
    """Follow the masks through the chain ``order``; raises NotAChain where it cannot.

    Units are removed across a connection only where the forward pass calls no other weighted module
    between the two Bayesian layers; the last Bayesian layer keeps all its outputs (what reads them is
    not Bayesian, or they are the logits), its pruned filters staying as zeros."""
    layers = dict(bayes_layers(model))
    named = [name for name in order if name in layers]
    if len(named) != len(set(named)) or set(named) != set(layers):
        raise NotAChain("each Bayesian layer must be called exactly once per forward pass")
    chain = [(name, layers[name]) for name in named]
    positions = [order.index(name) for name in named]
    linked = [positions[i + 1] == positions[i] + 1 for i in range(len(chain) - 1)]
    keep_in, keep_out, delivered = [], [], [None] * len(chain)
    for index, (name, layer) in enumerate(chain):  # each layer's own groups
        if isinstance(layer, BayesLinear):
            keep_in.append(masks[name].clone())
            keep_out.append(torch.ones(layer.out_features, dtype=torch.bool, device=masks[name].device))
        else:
            keep_in.append(torch.ones(layer.in_channels, dtype=torch.bool, device=masks[name].device))
            own = masks[name].clone()
            keep_out.append(own if index < len(chain) - 1 and linked[index] else torch.ones_like(own))
    for i in range(len(chain) - 1):  # each connection: a unit lives if both sides keep it
        (first_name, first), (second_name, second) = chain[i], chain[i + 1]
        if not linked[i]:
            continue  # a dense layer or BatchNorm between: each side keeps its own groups only
        outputs, inputs = keep_out[i], keep_in[i + 1]
        if isinstance(second, BayesLinear) and isinstance(first, BayesConv2d):
            if second.in_features % first.out_channels:
                raise NotAChain(f"{second_name} has {second.in_features} inputs, not a multiple of "
                                f"{first_name}'s {first.out_channels} channels")
            per_channel = second.in_features // first.out_channels
            alive = outputs & inputs.reshape(first.out_channels, per_channel).any(dim=1)
            delivered[i + 1] = alive.repeat_interleave(per_channel)  # whole channels; the linear drops features
            keep_out[i], keep_in[i + 1] = alive, inputs & delivered[i + 1]
        elif isinstance(second, BayesLinear) == isinstance(first, BayesLinear):
            if outputs.numel() != inputs.numel():
                raise NotAChain(f"{first_name} has {outputs.numel()} outputs but {second_name} "
                                f"{inputs.numel()} inputs")
            alive = outputs & inputs
            keep_out[i], keep_in[i + 1], delivered[i + 1] = alive, alive.clone(), alive.clone()
        else:
            raise NotAChain(f"a linear layer ({first_name}) feeding a convolution ({second_name})")
    return [Kept(name, layer, keep_in[i], keep_out[i], delivered[i]) for i, (name, layer) in enumerate(chain)]


class SelectInputs(nn.Module):
    """Keeps the input features a pruned first linear layer still reads (pixels the posterior pruned)."""

    def __init__(self, index: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("index", index.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.index_select(-1, self.index)


def rounded(weight: torch.Tensor, bits: int | None) -> torch.Tensor:
    """``weight`` rounded to a grid of step 2^-bits (the tutorial's special_round); None: unchanged."""
    if bits is None:
        return weight
    step = 2.0 ** -bits
    return torch.floor(weight / step + 0.5) * step


@torch.no_grad()
def export_pruned(model: nn.Module, kept: list[Kept],
                  rounding: dict[str, Callable[[torch.Tensor], torch.Tensor]] | None = None) -> nn.Module:
    """A copy of ``model`` whose Bayesian layers are plain nn.Linear / nn.Conv2d with only the kept
    units, weights the (masked) posterior means, optionally passed through ``rounding[layer]`` (the
    weights only, not the biases: the factors count weights)."""
    pruned = copy.deepcopy(model)
    for row in kept:
        layer = row.layer
        weight = layer.mean_weight()[row.keep_out][:, row.keep_in]
        round_weight = (rounding or {}).get(row.name)
        weight = weight if round_weight is None else round_weight(weight)
        if isinstance(layer, BayesLinear):
            bias = None if layer.bias_mu is None else layer.bias_mu[row.keep_out]
            plain = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
            arriving = row.keep_in if row.delivered is None else row.keep_in[row.delivered]
            if not bool(arriving.all()):  # single features pruned within what arrives (pixels, or in a channel)
                plain = nn.Sequential(SelectInputs(arriving.nonzero().flatten()), plain)
        else:
            bias = layer.mean_bias()
            bias = None if bias is None else bias[row.keep_out]
            plain = nn.Conv2d(weight.shape[1], weight.shape[0], layer.kernel_size, layer.stride, layer.padding,
                              layer.dilation, bias=bias is not None)
        plain = plain.to(weight.device)
        target = plain[-1] if isinstance(plain, nn.Sequential) else plain
        target.weight.copy_(weight)
        if bias is not None:
            target.bias.copy_(bias)
        parent_name, _, attr = row.name.rpartition(".")
        parent = pruned.get_submodule(parent_name) if parent_name else pruned
        setattr(parent, attr, plain)
    return pruned
