"""lowrank.safe_yaml: data only, bounded once aliases expand, and no way to ask it for an unsafe loader."""

from __future__ import annotations

import pytest
import yaml

from lowrank import safe_yaml


def test_python_tags_are_refused_and_plain_data_loads():
    assert safe_yaml.load("a: [1, 2]\nb: {c: x}\n") == {"a": [1, 2], "b": {"c": "x"}}
    with pytest.raises(yaml.YAMLError):
        safe_yaml.load("!!python/object/apply:os.system ['true']")


def test_alias_expansion_is_bounded():
    bomb = "a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 10)}]\n" for i in range(5))
    with pytest.raises(safe_yaml.TooLarge):
        safe_yaml.load(bomb)


@pytest.mark.parametrize("loader", [yaml.Loader, yaml.UnsafeLoader, yaml.FullLoader])
def test_an_unsafe_loader_is_refused(loader):
    with pytest.raises(ValueError, match="safe_yaml.load takes"):
        safe_yaml.load("a: 1", loader=loader)
