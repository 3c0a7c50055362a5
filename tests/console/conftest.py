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


@pytest.fixture
def lowrank(tmp_path, monkeypatch, capsys):
    """The real ``lowrank`` entry point in this process with a private LOWRANK_HOME (``lowrank.home``);
    returns (exit code, stdout, stderr) and checks that no traceback and no raw BEL / 8-bit CSI reached
    the terminal (test_bad_input overrides it with a variant that also checks nothing was created)."""
    import sys

    from console.cli import main

    home = tmp_path / "home"
    monkeypatch.setenv("LOWRANK_HOME", str(home))
    monkeypatch.setenv("COLUMNS", "240")

    def call(*args: str) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "argv", ["lowrank", *args])
        with pytest.raises(SystemExit) as exit_info:
            main()
        out, err = capsys.readouterr()
        assert "Traceback" not in out + err, (args, err)
        assert "\x07" not in out + err and "\x9b" not in out + err, (args, out + err)
        return exit_info.value.code or 0, out, err

    call.home = home
    return call
