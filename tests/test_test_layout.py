"""The test tree itself: pytest (rootdir-relative, no packages) imports each test file by its
basename, so two test files with one name make collection fail on a clean checkout."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def test_test_file_basenames_are_unique():
    names = Counter(path.name for path in TESTS.rglob("test_*.py"))
    assert [name for name, count in names.items() if count > 1] == []
