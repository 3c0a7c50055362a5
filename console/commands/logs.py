"""``lowrank logs RUN``: the worker's output.log; ``-f`` follows it until the run ends."""

from __future__ import annotations

import sys
import time
from typing import Annotated, Optional

import typer

POLL_SECONDS = 0.25


def register(app: typer.Typer) -> None:
    """Add the ``logs`` command."""

    @app.command(no_args_is_help=True)
    def logs(
        run: Annotated[str, typer.Argument(help="run id (a unique prefix is enough)")],
        follow: Annotated[bool, typer.Option("--follow", "-f", help="keep printing until the run ends (Ctrl-C stops)")] = False,
        tail: Annotated[Optional[int], typer.Option("--tail", "-n", help="start with only the last N lines")] = None,
    ) -> None:
        """Print a run's output (stdout and stderr of its worker)."""
        from lowrank.rundir import FINAL_STATES, LOG_FILE

        from console.runs import RunStore, reconcile

        run_dir = RunStore().resolve(run)
        path = run_dir.file(LOG_FILE)
        offset = 0
        if tail is not None and path.exists():
            lines = path.read_bytes().splitlines(keepends=True)
            offset = path.stat().st_size - sum(len(line) for line in lines[-tail:]) if tail else path.stat().st_size
        try:
            while True:
                offset = _copy(path, offset)
                if not follow:
                    return
                if reconcile(run_dir).get("state") in FINAL_STATES:
                    _copy(path, offset)  # whatever landed with the final status
                    return
                time.sleep(POLL_SECONDS)
        except KeyboardInterrupt:
            return


def _copy(path, offset: int) -> int:
    """Write the bytes of ``path`` after ``offset`` to stdout; returns the new offset."""
    try:
        with open(path, "rb") as handle:
            handle.seek(offset)
            data = handle.read()
    except FileNotFoundError:
        return offset
    if data:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
    return offset + len(data)
