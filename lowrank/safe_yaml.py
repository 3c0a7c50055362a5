"""YAML read as data, with a bound on its size once aliases are expanded.

``yaml.safe_load`` never runs code (no ``!!python/...`` tags), but YAML anchors and
aliases let a few hundred bytes describe a billion values ("billion laughs"): ten levels
of ten aliases each. The parser shares the aliased objects, so loading is cheap - the
cost comes later, when anything walks the data as a tree (merging a preset, marking where
each key came from, flattening a config for ``diff``, printing it). Every YAML that comes
from a user or a file goes through :func:`load`, which counts the values a tree walk would
visit and refuses a document past :data:`MAX_VALUES`; legitimate presets hold a few
hundred, and aliases that expand modestly (a shared schedule) stay allowed.
"""

from __future__ import annotations

from typing import Any

import yaml

MAX_VALUES = 100_000  # values in the fully expanded document; a large preset holds ~500

FAST_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the C loader lists hundreds of runs quickly
SAFE_LOADERS = frozenset({yaml.SafeLoader, FAST_LOADER})


class TooLarge(ValueError):
    """The document expands (through aliases) to more than :data:`MAX_VALUES` values."""


def expanded_size(data: Any, limit: int = MAX_VALUES) -> int:
    """How many values a tree walk of ``data`` visits (aliases counted each time), up to ``limit + 1``.

    The walk keeps a stack of its own (no recursion limit) and stops as soon as the count
    passes ``limit``, so a bomb costs at most ``limit`` steps.
    """
    count, stack = 0, [data]
    while stack:
        item = stack.pop()
        count += 1
        if count > limit:
            return count
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
    return count


def load(text: str | bytes, limit: int = MAX_VALUES, loader: type = yaml.SafeLoader) -> Any:
    """``yaml.safe_load(text)``, refusing a document that expands past ``limit`` values.

    ``loader``: a safe loader class (``yaml.SafeLoader``, or :data:`FAST_LOADER` for readers).

    Raises ``yaml.YAMLError`` for text that is not YAML (as ``safe_load`` does) and
    :class:`TooLarge` for a document too big once its aliases are expanded.
    """
    if loader not in SAFE_LOADERS:  # never a loader that builds Python objects from tags
        raise ValueError(f"safe_yaml.load takes one of {[cls.__name__ for cls in SAFE_LOADERS]}, not {loader!r}")
    data = yaml.load(text, Loader=loader)
    if isinstance(data, (dict, list)) and expanded_size(data, limit) > limit:
        raise TooLarge(f"it expands to more than {limit:,} values (YAML anchors/aliases repeated inside each other)")
    return data
