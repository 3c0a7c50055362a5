"""``C``: a budget-matched sweep from the console -- plan (dry run) and launch through the CLI's
own ``lowrank compare run`` in a child process, so the console never imports torch (the plan
builds every network on the meta device) and the preview is exactly what the CLI prints.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from lowrank.errors import UserError

from .actions import parse_overrides

PLAN_WIDTH = 100  # columns of the previewed plan (the dialog shows it in a scrollable pane)


@dataclass(frozen=True)
class SweepRequest:
    """What the sweep dialog asks for: the ``lowrank compare run`` arguments."""

    preset: Path
    methods: tuple[str, ...]
    budgets: str = ""
    seeds: int = 1
    grid: tuple[str, ...] = ()  # KEY=V1,V2 each
    overrides: str = ""
    placement: str = "queue"  # queue | queue-cpu | gpus:N | slurm
    skip_unreachable: bool = False

    def arguments(self) -> list[str]:
        """The ``compare run`` arguments (a bad override or grid entry raises UserError)."""
        if not self.methods:
            raise UserError("choose at least one method", key="methods", hint="space toggles a method in the list")
        if self.seeds < 1:
            raise UserError(f"seeds must be >= 1, got {self.seeds}", key="seeds")
        args = ["compare", "run", str(self.preset), "--methods", ",".join(self.methods), "--seeds", str(self.seeds)]
        if self.budgets.strip():
            args += ["--budgets", self.budgets.replace(" ", "")]
        for word in parse_overrides(self.overrides):
            args += ["--set", word]
        for entry in self.grid:
            if "=" not in entry:
                raise UserError(f"grid entry {entry!r} is not KEY.PATH=V1,V2", key="grid",
                                hint="e.g. train.weight_decay=1e-4,5e-4")
            args += ["--grid", entry]
        if self.placement == "queue-cpu":
            args.append("--cpu")
        elif self.placement.startswith("gpus:"):
            args += ["--gpus", self.placement.removeprefix("gpus:")]
        elif self.placement == "slurm":
            args += ["--backend", "slurm"]
        if self.skip_unreachable:
            args.append("--skip-unreachable")
        return args


@dataclass
class SweepAnswer:
    """A child's answer: ``text`` (the plan, or the error) and, after a launch, the sweep id."""

    ok: bool
    text: str
    sweep: str | None = None
    runs: list[str] = field(default_factory=list)


def _cli(home: Path, args: list[str], timeout: float, columns: int = PLAN_WIDTH) -> subprocess.CompletedProcess:
    env = {**os.environ, "LOWRANK_HOME": str(home), "COLUMNS": str(columns), "NO_COLOR": "1", "TERM": "dumb"}
    try:
        return subprocess.run([sys.executable, "-m", "console.cli", *args], capture_output=True, text=True,
                              timeout=timeout, env=env, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise UserError(f"lowrank {' '.join(args[:3])} took longer than {timeout:.0f} s",
                        hint=f"run `lowrank {' '.join(args)}` in a shell to see why") from None


def _failure(done: subprocess.CompletedProcess) -> SweepAnswer:
    text = (done.stderr.strip() or done.stdout.strip() or f"exit {done.returncode}").removeprefix("error: ")
    return SweepAnswer(False, text)


def preview(home: Path, request: SweepRequest, timeout: float = 600.0, columns: int = PLAN_WIDTH) -> SweepAnswer:
    """The plan ``lowrank compare run --dry-run`` prints (solved hp, params, unreachable entries
    with their reachable range); nothing is created."""
    done = _cli(home, [*request.arguments(), "--dry-run"], timeout, columns)
    if done.returncode != 0:
        return _failure(done)
    return SweepAnswer(True, done.stdout.rstrip() + ("\n" + done.stderr.rstrip() if done.stderr.strip() else ""))


def launch(home: Path, request: SweepRequest, timeout: float = 600.0) -> SweepAnswer:
    """Create and queue the sweep's runs (``--detach --json``); the answer names the sweep."""
    done = _cli(home, [*request.arguments(), "--detach", "--json"], timeout)
    if done.returncode != 0:
        return _failure(done)
    try:
        data = json.loads(done.stdout)
    except ValueError:
        return SweepAnswer(False, f"lowrank compare run printed no JSON: {done.stdout.strip()[-300:]}")
    runs = [run["run_id"] for run in data.get("runs", [])]
    return SweepAnswer(True, f"sweep {data['sweep']}: {len(runs)} run(s) queued", data["sweep"], runs)


def method_choices(timeout: float = 120.0) -> list[tuple[str, str]]:
    """(name, one-line description) of every registered method, from ``lowrank methods --json``
    in a child process (the registry's declarations; the console imports no torch)."""
    done = subprocess.run([sys.executable, "-m", "console.cli", "methods", "--json"], capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        raise UserError(f"cannot list the methods: {(done.stderr.strip().splitlines() or ['no output'])[-1]}",
                        hint="run `lowrank methods` in a shell")
    rows = json.loads(done.stdout)
    return [(row["name"], (row.get("description") or "").splitlines()[0][:60] if row.get("description") else "")
            for row in rows]
