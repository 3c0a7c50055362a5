"""What code ran a run: recorded in status.json under ``provenance``.

Two halves, written at different moments:

- :func:`launch_provenance` (torch-free, cheap: two ``git`` calls per repository) when the
  run directory is created: the exact command line, the working directory and the git
  commit + dirty flag of its repository (if any), the git commit + dirty flag of the
  lowrank source itself (when it is a checkout; its version always), Python, host.
- :func:`runtime_provenance` by the worker once torch is imported: torch, CUDA and cuDNN
  versions, the GPU names the run sees, and the host and Python it really ran on.

"Dirty" means tracked files differ from the commit (``git status --porcelain
--untracked-files=no``: untracked files are not counted, so a scratch file does not mark
every run dirty). Every field is best-effort: no git, no repository or a git that hangs
gives ``None`` for that field, never an error -- provenance must not stop a run.
"""

from __future__ import annotations

import os
import platform
import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

GIT_TIMEOUT_S = 5.0
CACHE_S = 10.0  # a sweep creating 50 runs asks git once, a console open for hours still sees new commits
_cache: dict[str, tuple[float, dict[str, Any] | None]] = {}


def _git(folder: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True,
                              timeout=GIT_TIMEOUT_S, check=False, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def git_state(folder: Path | str) -> dict[str, Any] | None:
    """``{"root", "commit", "dirty"}`` of the git work tree holding ``folder``; None if none."""
    folder = Path(folder)
    key = str(folder)
    cached = _cache.get(key)
    if cached is not None and time.monotonic() - cached[0] < CACHE_S:
        return cached[1]
    state = None
    root = _git(folder, "rev-parse", "--show-toplevel")
    if root:
        commit = _git(folder, "rev-parse", "HEAD")  # None in a repository without commits
        changes = _git(folder, "status", "--porcelain", "--untracked-files=no")
        state = {"root": root, "commit": commit, "dirty": None if changes is None else bool(changes)}
    _cache[key] = (time.monotonic(), state)
    return state


def lowrank_source() -> Path:
    """The folder holding the ``lowrank`` package (a checkout's root for an editable install)."""
    return Path(__file__).resolve().parent.parent


def launch_provenance(argv: list[str] | None = None, cwd: Path | str | None = None) -> dict[str, Any]:
    """The launch-time half: command line, working directory's repo, lowrank's own code."""
    from . import __version__

    cwd = Path(cwd or os.getcwd())
    argv = list(sys.argv if argv is None else argv)
    lowrank_git = git_state(lowrank_source())
    return {
        "command": shlex.join(argv),
        "cwd": str(cwd),
        "repo": git_state(cwd),
        "lowrank": {"version": __version__, "path": str(lowrank_source()),
                    **({"commit": lowrank_git["commit"], "dirty": lowrank_git["dirty"]} if lowrank_git else {})},
        "python": platform.python_version(),
        "host": socket.gethostname(),
    }


def runtime_provenance() -> dict[str, Any]:
    """The worker's half (imports torch): versions of torch/CUDA/cuDNN and the GPUs it sees."""
    import torch

    cuda = torch.version.cuda  # the CUDA torch was built with; None for a CPU build
    cudnn = _cudnn_text(torch.backends.cudnn.version()) if torch.backends.cudnn.is_available() else None
    gpus = [torch.cuda.get_device_name(index) for index in range(torch.cuda.device_count())] \
        if torch.cuda.is_available() else []
    return {"torch": torch.__version__, "cuda": cuda, "cudnn": cudnn, "gpu_names": gpus,
            "worker_host": socket.gethostname(), "worker_python": platform.python_version()}


def _cudnn_text(number: int | None) -> str | None:
    """cuDNN's version integer as text: ``92400`` -> ``9.24.0`` (>= 9), ``8902`` -> ``8.9.2``."""
    if not isinstance(number, int):
        return None
    if number >= 90000:
        return f"{number // 10000}.{number % 10000 // 100}.{number % 100}"
    return f"{number // 1000}.{number % 1000 // 100}.{number % 100}"


def record_runtime(run: Any, extra: dict[str, Any] | None = None) -> None:
    """Merge :func:`runtime_provenance` (and ``extra`` facts of the worker process) into the
    run's status ``provenance`` (worker start)."""
    try:
        runtime = {**runtime_provenance(), **(extra or {})}
    except Exception as error:  # noqa: BLE001 -- provenance never stops a run
        runtime = {"runtime_error": f"{type(error).__name__}: {error}"}
    recorded = run.read_status().get("provenance")
    run.update_status(provenance={**(recorded if isinstance(recorded, dict) else {}), **runtime})


# ------------------------------------------------------------------ display (torch-free)

def provenance_lines(provenance: Any) -> list[tuple[str, str]]:
    """(label, text) pairs for ``lowrank show`` and the console's detail pane."""
    if not isinstance(provenance, dict):
        return []
    out: list[tuple[str, str]] = []

    def code(state: Any) -> str | None:
        if not isinstance(state, dict) or not state.get("commit"):
            return None
        dirty = {True: " (dirty)", False: "", None: " (dirty: unknown)"}.get(state.get("dirty"), "")
        return f"{str(state['commit'])[:12]}{dirty}"

    lowrank = provenance.get("lowrank") if isinstance(provenance.get("lowrank"), dict) else {}
    version = lowrank.get("version")
    if version or code(lowrank):
        out.append(("lowrank", " ".join(str(part) for part in (version, code(lowrank)) if part)))
    repo = provenance.get("repo")
    if isinstance(repo, dict):
        out.append(("repo", f"{repo.get('root')} @ {code(repo) or 'no commit'}"))
    elif "repo" in provenance:
        out.append(("repo", "none (working directory not in a git repository)"))
    for key, label in (("command", "command"), ("cwd", "cwd"), ("python", "python"), ("torch", "torch"),
                       ("cuda", "CUDA (torch build)"), ("cudnn", "cuDNN"), ("worker_host", "ran on")):
        value = provenance.get(key)
        if value not in (None, ""):
            out.append((label, str(value)))
    if "gpu_names" in provenance:
        names = provenance.get("gpu_names")
        out.append(("GPUs", ", ".join(map(str, names)) if isinstance(names, list) and names else "none"))
    if provenance.get("runtime_error"):
        out.append(("runtime", str(provenance["runtime_error"])))
    return out
