"""Walk a model and replace its convolutions by a substitute method's layer, in place.

Which convolutions are replaced: every ``nn.Conv2d`` with ``groups == 1`` (grouped and
depthwise convolutions are already cheap and stay) that no skip rule names. Skip rules are
strings: glob patterns over the qualified module name (``fnmatch``, e.g. ``"layer4.*"``)
and the tokens in :data:`SKIP_TOKENS`. The research notes replace everything but the first
layer and the 1x1 shortcuts (approximating the first layer "is generally bad", notes 001),
hence :data:`DEFAULT_SKIP`. :func:`plan_substitution` says what would be replaced without
building anything; the budget solver uses it.

A method's ``seed`` option (HashedNets' hash, ACDC's permutation) is made per layer from the
layer's qualified name (:func:`layer_options`): every layer draws its own hash function or
permutation, as in the papers, and a rebuild of the same model draws the same ones.
"""

from __future__ import annotations

import fnmatch
import zlib
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch
import torch.nn as nn

from .errors import ConfigError
from .methods import get_method
from .methods.registry import ConvSpec

SHORTCUT_WORDS = ("shortcut", "downsample", "skip")


def _is_stem(name: str, conv: nn.Conv2d, first: str | None) -> bool:
    return name == first


def _is_shortcut(name: str, conv: nn.Conv2d, first: str | None) -> bool:
    # 1x1 projections on residual paths; torchvision calls them "downsample", WRN "shortcut"
    return tuple(conv.kernel_size) == (1, 1) and any(word in name.lower() for word in SHORTCUT_WORDS)


def _never(name: str, conv: nn.Conv2d, first: str | None) -> bool:
    return False  # nn.Linear layers are never replaced; the token exists to say so in configs


SKIP_TOKENS: dict[str, tuple[Callable[[str, nn.Conv2d, str | None], bool], str]] = {
    "@stem": (_is_stem, "the first Conv2d of the model (in registration order)"),
    "@shortcut": (_is_shortcut, "1x1 convs whose name contains " + "/".join(SHORTCUT_WORDS)),
    "@classifier": (_never, "the classifier (nn.Linear is never replaced anyway)"),
}
DEFAULT_SKIP: tuple[str, ...] = ("@stem", "@shortcut")


@dataclass(frozen=True)
class PlannedLayer:
    """One convolution and what happens to it."""

    name: str
    spec: ConvSpec
    reason: str = ""  # why it is skipped; empty for a replaced layer


@dataclass
class SubstitutionReport:
    """What :func:`substitute` did: replaced and skipped layers, and warnings about the rules."""

    method: str
    hp: Any
    replaced: list[PlannedLayer] = field(default_factory=list)
    skipped: list[PlannedLayer] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _check_skip(skip: Sequence[str]) -> list[str]:
    if isinstance(skip, str):  # a lone string would be iterated character by character
        skip = [skip]
    for rule in skip:
        if rule.startswith("@") and rule not in SKIP_TOKENS:
            raise ConfigError(f"unknown skip token {rule!r}; valid tokens: {', '.join(SKIP_TOKENS)}",
                              key="substitute.skip", hint="or give a glob pattern over module names")
    return list(skip)


def _unreproducible(conv: nn.Conv2d) -> str:
    """Why no substitute can stand in for ``conv`` with its exact output (empty when one can).

    Every substitute pads symmetrically with zeros, as ``ConvSpec`` describes: a conv that pads by
    reflection/replication/circularly, or whose ``padding='same'`` is asymmetric (an even effective
    kernel pads one more on the right), stays dense rather than change the network's shapes.
    """
    if conv.padding_mode != "zeros":
        return f"padding_mode={conv.padding_mode!r} (substitutes pad with zeros)"
    if conv.padding == "same" and any(d * (k - 1) % 2 for d, k in zip(conv.dilation, conv.kernel_size)):
        return "padding='same' with an even kernel pads asymmetrically"
    return ""


def _walk(model: nn.Module, skip: Sequence[str]) -> tuple[list[PlannedLayer], list[PlannedLayer], list[str]]:
    rules = _check_skip(skip)
    convs = [(name, module) for name, module in model.named_modules() if isinstance(module, nn.Conv2d)]
    first = convs[0][0] if convs else None
    replace, skipped, matched = [], [], set()
    for name, conv in convs:
        spec = ConvSpec.from_conv(conv)
        if conv.groups != 1:
            skipped.append(PlannedLayer(name, spec, f"grouped conv (groups={conv.groups})"))
            continue
        unsupported = _unreproducible(conv)
        if unsupported:
            skipped.append(PlannedLayer(name, spec, unsupported))
            continue
        for rule in rules:
            hit = SKIP_TOKENS[rule][0](name, conv, first) if rule.startswith("@") else fnmatch.fnmatchcase(name, rule)
            if hit:
                matched.add(rule)
                skipped.append(PlannedLayer(name, spec, f"skip rule {rule!r}"))
                break
        else:
            replace.append(PlannedLayer(name, spec))
    warnings = [f"skip pattern {rule!r} matches no convolution" for rule in rules
                if not rule.startswith("@") and rule not in matched]
    return replace, skipped, warnings


def layer_options(declared: dict[str, Any], options: dict[str, Any], name: str) -> dict[str, Any]:
    """``options`` for the layer called ``name``: a declared ``seed`` option becomes that layer's own seed.

    HashedNets indexes its hash function by layer (h^l in Chen et al. 2015) and ACDC's
    permutations are drawn per layer; one seed for the whole net would give same-shape
    layers the same pattern. crc32 of "seed:name" is stable across processes (unlike ``hash()``).
    """
    if "seed" not in declared:
        return options
    seed = int(options.get("seed", declared["seed"]))
    return {**options, "seed": zlib.crc32(f"{seed}:{name}".encode())}


def plan_substitution(model: nn.Module, skip: Sequence[str] = DEFAULT_SKIP) -> list[tuple[str, ConvSpec]]:
    """(name, spec) of every convolution :func:`substitute` would replace; builds nothing.

    A conv module registered under several names appears once (under its first name).
    """
    return [(layer.name, layer.spec) for layer in _walk(model, skip)[0]]


def substitute(model: nn.Module, method: str, hp: Any = None, options: dict | None = None,
               skip: Sequence[str] = DEFAULT_SKIP) -> SubstitutionReport:
    """Replace, in place, every planned conv of ``model`` by ``method``'s layer at ``hp``.

    The new layer is built on the replaced conv's device and dtype and takes its train/eval
    mode; a conv module registered under several names is replaced everywhere by one layer.
    """
    declaration = get_method(method)
    options = dict(options or {})
    replace, skipped, warnings = _walk(model, skip)
    targets = {name for name in (layer.name for layer in replace)}
    new_by_id: dict[int, nn.Module] = {}
    for name, module in model.named_modules():
        if name in targets:
            weight = module.weight
            with torch.device(weight.device):
                own = layer_options(declaration.options, options, name)
                layer = declaration.build(ConvSpec.from_conv(module), hp, **own)
            new_by_id[id(module)] = layer.to(dtype=weight.dtype).train(module.training)
    # every (parent, attribute) holding a replaced conv, including repeated registrations
    for parent in list(model.modules()):
        for child_name, child in list(parent._modules.items()):  # named_children() hides repeats
            if id(child) in new_by_id:
                setattr(parent, child_name, new_by_id[id(child)])
    return SubstitutionReport(method=method, hp=hp, replaced=replace, skipped=skipped, warnings=warnings)
