"""Fixtures of the TUI tests (helpers live in tui_helpers.py)."""

from tui_helpers import sleeper  # noqa: F401  (a fixture)
