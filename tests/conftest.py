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
    ``LOWRANK_REQUIRE_SLURM=1`` (CI, which starts one)."""
    import os

    if item.get_closest_marker("slurm") is None:
        return
    reason = slurm_missing()
    if reason is None:
        return
    if os.environ.get(REQUIRE_SLURM_ENV) == "1":
        pytest.fail(f"{REQUIRE_SLURM_ENV}=1 but {reason}", pytrace=False)
    pytest.skip(reason)
