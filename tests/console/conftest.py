"""Fixtures shared by the console tests."""

from __future__ import annotations

import pytest

from fake_worker import FAKE_WORKER


@pytest.fixture
def fake(home, monkeypatch):
    """LOWRANK_HOME whose runs use the fake worker (tests/console/fake_worker.py), with a
    fast scheduler poll; modules that need another CPU-run limit override this fixture."""
    monkeypatch.setenv("LOWRANK_WORKER", FAKE_WORKER)
    monkeypatch.setenv("LOWRANK_SCHEDULER_POLL", "0.1")
    return home


@pytest.fixture
def slurm_home(home):
    """The environment for the CLI of a Slurm test (this checkout, the real worker); at teardown
    every job of this home that Slurm still lists is cancelled."""
    from slurm_helpers import cancel_leftovers, slurm_env

    yield slurm_env(home)
    cancel_leftovers(home)
