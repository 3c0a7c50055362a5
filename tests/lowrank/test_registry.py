"""The one registry mechanism behind models, datasets, methods and schedules."""

from __future__ import annotations

import pytest

from lowrank.data import list_datasets
from lowrank.methods import get_method
from lowrank.models import get_model_builder
from lowrank.registry import Registry
from lowrank.schedule import schedule


def test_duplicate_name_is_an_error_and_unknown_lists_known():
    registry: Registry[int] = Registry("widget")
    registry.add("b", 2)
    registry.register("a")(1)
    with pytest.raises(ValueError, match="widget 'a' is registered twice"):
        registry.add("a", 3)
    assert registry.get("a") == 1 and registry.names() == ["a", "b"] and "b" in registry
    with pytest.raises(KeyError, match="unknown widget 'c'; known widgets: a, b"):
        registry.get("c")


def test_parameters_of_a_callable_entry():
    registry: Registry = Registry("builder")
    registry.add("f", lambda config, size=3: None)
    assert list(registry.parameters("f")) == ["config", "size"]


def test_every_registry_uses_it():
    with pytest.raises(KeyError, match="known models: .*tiny_convnet"):
        get_model_builder("nope")
    with pytest.raises(KeyError, match="unknown substitute method 'nope'; known methods: .*separable"):
        get_method("nope")
    with pytest.raises(ValueError, match="schedule 'cosine' is registered twice"):
        schedule("cosine")(lambda config, t, total: 1.0)
    assert {"digits", "synthetic", "cifar10", "imagenet"} <= set(list_datasets())
