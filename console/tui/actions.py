"""What the console's keys do to runs: launch a preset, kill, relaunch (blocking; called from
thread workers). Thin wrappers over :mod:`console.backends` and :mod:`console.scheduler`.

A *placement* says where a run goes: ``queue`` (the scheduler picks GPU or CPU when
resources free up), ``queue-cpu``, ``cpu`` (start now on the CPU) or ``gpu:N`` (start now
on GPU N).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

from lowrank.rundir import RunDir

REPO_PRESETS = Path(__file__).resolve().parents[2] / "presets"
PRESETS_ENV = "LOWRANK_PRESETS"


def presets_dirs() -> list[Path]:
    """Where the launch picker looks: ``$LOWRANK_PRESETS``, else ./presets and the repo's presets/."""
    if os.environ.get(PRESETS_ENV):
        return [Path(os.environ[PRESETS_ENV]).expanduser()]
    found: list[Path] = []
    for folder in (Path.cwd() / "presets", REPO_PRESETS):
        if folder.is_dir() and folder.resolve() not in [f.resolve() for f in found]:
            found.append(folder)
    return found


def list_presets(dirs: Sequence[Path]) -> list[Path]:
    """Every ``*.yaml``/``*.yml`` under ``dirs`` (recursively), sorted."""
    files: set[Path] = set()
    for folder in dirs:
        if folder.is_dir():
            files.update(path.resolve() for pattern in ("*.yaml", "*.yml") for path in folder.rglob(pattern))
    return sorted(files)


def placement_options(snapshot: Any) -> list[tuple[str, str]]:
    """(label, placement) choices for the launch and relaunch dialogs."""
    options = [("queue: the scheduler picks a free GPU (or the CPU)", "queue"), ("queue on the CPU", "queue-cpu"),
               ("start now on the CPU", "cpu")]
    for gpu in getattr(snapshot, "gpus", None) or []:
        options.append((f"start now on GPU {gpu.index} ({gpu.name}, {gpu.memory_free_mb / 1024:.1f} GiB free)",
                        f"gpu:{gpu.index}"))
    return options


def place(run: RunDir, placement: str, *, resume: bool = False) -> str:
    """Queue or start ``run`` as ``placement`` says; returns a one-line description."""
    from console import backends
    from console.scheduler import requirement_from_cli, submit

    if placement in ("queue", "queue-cpu"):
        submit(run, requirement_from_cli(cpu=placement == "queue-cpu"), resume=resume)
        return "queued" + (" on the CPU" if placement == "queue-cpu" else "")
    gpus = [] if placement == "cpu" else [int(placement.removeprefix("gpu:"))]
    pid = backends.for_run(run).start(run, gpus=gpus, resume=resume)
    return f"started on {'the CPU' if not gpus else f'GPU {gpus[0]}'} (pid {pid})"


def parse_overrides(text: str) -> list[str]:
    """``train.epochs=5 data.batch_size=32`` (shell quoting allowed) -> ``["train.epochs=5", ...]``."""
    import shlex

    from lowrank.errors import ConfigError

    try:
        words = shlex.split(text)
    except ValueError as error:
        raise ConfigError(f"cannot parse the overrides: {error}", key="--set") from None
    words = [word.removeprefix("--set=") for word in words if word not in ("--set", "-s")]
    bad = [word for word in words if "=" not in word]
    if bad:
        raise ConfigError(f"{bad[0]!r} is not KEY.PATH=VALUE", key="--set", hint="e.g. train.epochs=5")
    return words


def placement_flags(placement: str) -> dict[str, Any]:
    """The ``lowrank run`` flags a placement stands for (``gpu:N`` -> ``--gpu N``, ``cpu`` -> ``--cpu``)."""
    if placement in ("cpu", "queue-cpu"):
        return {"cpu": True}
    if placement.startswith("gpu:"):
        return {"gpu": [int(placement.removeprefix("gpu:"))]}
    return {}


def launch_preset(home: Path, preset: Path, overrides: str, placement: str) -> tuple[RunDir, str]:
    """Validate ``preset`` with ``overrides``, run the up-front checks ``lowrank run`` runs
    (budget, device, GPUs, data files, teacher) in a subprocess -- the console imports no
    torch --, and only then create its run and place it. A refusal is a UserError and
    nothing exists."""
    from lowrank.config import load

    from console.precheck import check_in_subprocess

    words = parse_overrides(overrides)
    check_in_subprocess(preset, words, home=home, **placement_flags(placement))
    config = load(preset, words)
    from console.naming import name_run

    run = RunDir.create(name_run(config.to_dict(), words), home=home, extra_status={"preset": str(preset)})
    return run, place(run, placement)


def kill(home: Path, run_id: str) -> str:
    """Kill one run completely; the report's message."""
    from console import backends
    from console.runs import RunStore

    run = RunStore(home).get(run_id)
    report = backends.for_run(run).kill(run)
    return f"{run_id}: {report.state} ({report.message})"


def relaunch_run(home: Path, run_id: str, resume: bool, placement: str) -> tuple[RunDir, str]:
    """A new run from ``run_id``'s config, or ``run_id`` resumed in place; then place it."""
    from console.runs import RunStore, relaunch

    run = relaunch(RunStore(home).get(run_id), resume=resume)
    return run, place(run, placement, resume=resume)
