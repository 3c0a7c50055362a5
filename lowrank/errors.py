"""Errors a user can act on: they carry the file, the key path and a hint.

The CLI catches :class:`UserError` and prints its message in one block, never a
traceback; everything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """A problem with the user's input that they can fix (file, key, expected value, hint)."""

    def __init__(self, message: str, *, file: str | None = None, key: str | None = None,
                 hint: str | None = None) -> None:
        self.file = file
        self.key = key
        self.hint = hint
        self.detail = message
        super().__init__(self.render())

    def render(self) -> str:
        """The one-line message the CLI prints: ``file: key: what was expected; hint: ...``."""
        where = ": ".join(part for part in (self.file, self.key) if part)
        text = f"{where}: {self.detail}" if where else self.detail
        if self.hint:
            text += f"; hint: {self.hint}"
        return text


class ConfigError(UserError):
    """An experiment file or override that does not validate."""


class DataError(UserError):
    """A dataset that is missing or cannot be downloaded."""


class BudgetError(UserError):
    """A parameter budget a method cannot reach."""
