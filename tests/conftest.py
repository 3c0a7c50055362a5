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


# ---------------------------------------------------------------- the real Slurm cluster (marker `slurm`)

REQUIRE_SLURM_ENV = "LOWRANK_REQUIRE_SLURM"  # .ci/run sets it: a missing cluster fails instead of skipping


def slurm_missing() -> str | None:
    """Why this host cannot run the Slurm tests (None: sbatch is here and the cluster answers)."""
    import shutil
    import subprocess

    if shutil.which("sbatch") is None:
        return "no Slurm here (sbatch not on PATH); start a test cluster with: sudo .ci/slurm_setup.sh"
    try:
        done = subprocess.run(["sinfo", "--noheader", "--format=%T"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as error:
        return f"sinfo failed ({error}); start the cluster with: sudo .ci/slurm_setup.sh"
    states = done.stdout.split()
    unusable = ("down", "drain", "fail", "unk", "maint", "future", "inval", "power", "reboot")
    if done.returncode != 0 or not any(not s.startswith(unusable) for s in states):  # idle, mixed, completing ...
        return (f"the Slurm cluster does not answer or has no usable node (sinfo: {done.stdout.strip() or done.stderr.strip()}); "
                "start it with: sudo .ci/slurm_setup.sh")
    return None


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Tests marked ``slurm`` skip with the reason where no cluster answers, or fail when
    ``LOWRANK_REQUIRE_SLURM=1`` (CI, which starts one). The others wait until every job
    submitted early has ended: the test node has 2 cores and no oversubscription, so a
    2-task job would otherwise queue behind it."""
    import os

    if item.get_closest_marker("slurm") is None:
        return
    reason = slurm_missing()
    if reason is None:
        if item.get_closest_marker("starts_early") is None:
            for started in EARLY.values():
                try:
                    started.wait_ended()
                except Exception:  # noqa: BLE001 -- that job's own test reports how it went
                    pass
        return
    if os.environ.get(REQUIRE_SLURM_ENV) == "1":
        pytest.fail(f"{REQUIRE_SLURM_ENV}=1 but {reason}", pytrace=False)
    pytest.skip(reason)


# ---------------------------------------------------------------- Slurm jobs that wait for minutes

EARLY: dict[str, object] = {}  # module name -> what its start_early() returned (has wait_ended, cleanup)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """``starts_early`` tests run last and the other ``slurm`` tests just before them, so the job
    submitted at collection's end (a time-limit requeue cycle: minutes of Slurm's own timers)
    runs while the rest of the suite does, and no other job queues behind it."""
    early = [item for item in items if item.get_closest_marker("starts_early")]
    if not early:
        return
    slurm = [item for item in items if item.get_closest_marker("slurm") and item not in early]
    rest = [item for item in items if item not in early and item not in slurm]
    items[:] = rest + slurm + early


def pytest_collection_finish(session: pytest.Session) -> None:
    """Submit the jobs of the selected ``starts_early`` tests (once per module), where a cluster answers."""
    if session.config.option.collectonly:
        return
    modules = {item.module for item in session.items if item.get_closest_marker("starts_early")}
    if modules and slurm_missing() is None:
        for module in sorted(modules, key=lambda module: module.__name__):
            EARLY[module.__name__] = module.start_early()


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Cancel what an early job left in the queue (an interrupted suite) and remove its files."""
    for started in EARLY.values():
        started.cleanup()
    EARLY.clear()
