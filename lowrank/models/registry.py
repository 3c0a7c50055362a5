"""The registry of network families: ``@register_model`` a builder, ``create_model`` by name.

A builder takes ``num_classes`` and ``in_channels`` (from the dataset) plus its own
keyword arguments from the preset's ``model.kwargs``, and returns an ``nn.Module`` built
from plain ``nn.Conv2d``/``nn.Linear`` layers; :mod:`lowrank.substitute` swaps the
convolutions afterwards, so every model takes every method.

Conventions a model may follow (the trainer and distillation use them when present):

- ``model.tap_names``: names of submodules whose outputs are attention-transfer taps.
- ``model.drop_path_prob``: a float the trainer sets each epoch (drop-path schedule).
- with an auxiliary head, ``forward`` returns ``(logits, aux_logits)`` in training mode.
- ``model.training_only_modules``: {submodule name: label} of modules that run only in
  training (an auxiliary head); counts, budgets and the solver use the rest, the deployable
  network, and show these beside it (:mod:`lowrank.count`).
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

import torch.nn as nn

from ..registry import Registry

ModelBuilder = Callable[..., nn.Module]

_REGISTRY: Registry[ModelBuilder] = Registry("model")


def register_model(name: str) -> Callable[[ModelBuilder], ModelBuilder]:
    """Decorator storing a model builder under ``name``; a duplicate name is an error."""
    return _REGISTRY.register(name)


def get_model_builder(name: str) -> ModelBuilder:
    """The builder registered as ``name``; an unknown name lists the known ones."""
    return _REGISTRY.get(name)


def model_kwargs(name: str) -> dict[str, inspect.Parameter]:
    """The keyword arguments a model builder accepts (for validating ``model.kwargs``)."""
    return _REGISTRY.parameters(name)


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build the model registered as ``name`` with ``kwargs``."""
    return get_model_builder(name)(**kwargs)


def list_models() -> list[str]:
    """Names of all registered models, sorted."""
    return _REGISTRY.names()
