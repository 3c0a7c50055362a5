"""Shared fixtures: every test gets its own LOWRANK_HOME so runs never leak between tests."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh LOWRANK_HOME for this test (also exported to child processes)."""
    path = tmp_path / "lowrank-home"
    monkeypatch.setenv("LOWRANK_HOME", str(path))
    return path
