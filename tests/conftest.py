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


# ---------------------------------------------------------------- marker `subprocess`, kept true

# not what the marker is about: what ctypes.util.find_library runs to find a shared library (pynvml,
# torch's loaders), and git, which lowrank.provenance asks once per process and directory (cached:
# which test pays for it depends on the order the tests run in)
INCIDENTAL = {"ldconfig", "gcc", "cc", "ld", "objdump", "ld.so", "git"}
SPAWN_RECORD_ENV = "LOWRANK_SPAWN_RECORD"  # a file: record the unmarked tests that spawn, instead of failing


@pytest.fixture(autouse=True)
def _spawns_only_when_marked(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch):
    """A test that starts a child process (the CLI, a worker, torchrun, tmux, sbatch ...) must say so
    with ``@pytest.mark.subprocess`` (or ``slurm``/``tmux``, which imply it), so ``-m "not subprocess"``
    selects the in-process tests: an unmarked test that spawns fails at teardown, naming the command."""
    import subprocess

    spawned: list[str] = []
    original = subprocess.Popen._execute_child

    def execute_child(self, args, *rest, **kwargs):
        program = Path(str(args if isinstance(args, str) else args[0]).split()[0]).name
        if program in INCIDENTAL:
            return original(self, args, *rest, **kwargs)
        command = args if isinstance(args, str) else " ".join(map(str, args))
        spawned.append(" ".join(str(command).split())[:160])  # one line (python -c code has newlines)
        return original(self, args, *rest, **kwargs)

    monkeypatch.setattr(subprocess.Popen, "_execute_child", execute_child)
    yield
    monkeypatch.undo()
    if not spawned or any(request.node.get_closest_marker(name) for name in ("subprocess", "slurm", "tmux")):
        return
    import os

    record = os.environ.get(SPAWN_RECORD_ENV)
    if record:
        with open(record, "a") as handle:
            handle.write(f"{request.node.nodeid}\t{spawned[0]}\n")
        return
    pytest.fail(f"this test started a child process ({spawned[0]}) but is not marked subprocess: add "
                f"@pytest.mark.subprocess (the marker lets `pytest -m 'not subprocess'` leave it out)", pytrace=False)


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


def in_xdist_worker(config: pytest.Config) -> bool:
    """This process is a pytest-xdist worker (the suite runs with ``-n 2``, see pyproject.toml)."""
    return hasattr(config, "workerinput")


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the xdist_group markers
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Order the ``slurm`` tests, and, under pytest-xdist, say what must share a worker.

    In one process: ``starts_early`` tests run last and the other ``slurm`` tests just before
    them, so the job submitted at collection's end (a time-limit requeue cycle: minutes of
    Slurm's own timers) runs while the rest of the suite does, and no other job queues behind it.

    Under xdist (``--dist loadgroup``): every ``slurm`` test is in one group, so they run one after
    another on one worker (the test cluster's node has 2 CPUs and no oversubscription), first, so
    their minutes of waiting overlap the other worker's tests; every other test is grouped by its
    file, so a module's expensive fixtures (a trained run, a finished sweep) are made once."""
    early = [item for item in items if item.get_closest_marker("starts_early")]
    slurm = [item for item in items if item.get_closest_marker("slurm") and item not in early]
    rest = [item for item in items if item not in early and item not in slurm]
    if getattr(config.option, "dist", "no") != "no" or in_xdist_worker(config):
        for item in early + slurm:
            item.add_marker(pytest.mark.xdist_group("slurm"))
        for item in rest:
            item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::")[0]))
        items[:] = early + slurm + rest
        return
    if early:
        items[:] = rest + slurm + early


def pytest_collection_finish(session: pytest.Session) -> None:
    """Submit the jobs of the selected ``starts_early`` tests (once per module), where a cluster answers.

    Not in an xdist worker: every worker collects every test, and only the one that runs the test
    may submit its job (its fixture submits it then; the slurm group runs first, see above)."""
    if session.config.option.collectonly or in_xdist_worker(session.config):
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
