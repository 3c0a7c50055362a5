"""A name -> entry registry: the one mechanism behind models, datasets, methods and schedules.

Registering a name twice is a programming error; looking up an unknown name fails with
the list of known ones, so a typo in a preset is answered with the choices.
"""

from __future__ import annotations

import inspect
from typing import Callable, Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Entries by name, for one kind of thing (``kind`` and ``plural`` word the messages)."""

    def __init__(self, kind: str, plural: str | None = None) -> None:
        self.kind, self.plural = kind, plural or f"{kind}s"
        self._entries: dict[str, T] = {}

    def add(self, name: str, entry: T) -> T:
        """Store ``entry`` under ``name``; a duplicate name raises ValueError."""
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._entries[name] = entry
        return entry

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator form of :meth:`add`."""
        return lambda entry: self.add(name, entry)

    def get(self, name: str) -> T:
        """The entry for ``name``; an unknown name raises KeyError listing the known ones."""
        try:
            return self._entries[name]
        except KeyError:
            raise KeyError(f"unknown {self.kind} {name!r}; known {self.plural}: {', '.join(self.names())}") from None

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def parameters(self, name: str) -> dict[str, inspect.Parameter]:
        """The keyword arguments of a callable entry (for checking a preset's kwargs)."""
        return dict(inspect.signature(self.get(name)).parameters)
