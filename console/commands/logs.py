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
        raw: Annotated[bool, typer.Option("--raw", help="the bytes exactly as written (escape sequences act on "
                                                        "the terminal)")] = False,
    ) -> None:
        """Print a run's output (stdout and stderr of its worker); control characters are shown escaped."""
        from lowrank.rundir import FINAL_STATES, LOG_FILE

        from console.runs import RunStore, reconcile

        run_dir = RunStore().resolve(run)
        path = run_dir.file(LOG_FILE)
        offset = 0
        if tail is not None and path.is_file():
            lines = path.read_bytes().splitlines(keepends=True)
            offset = path.stat().st_size - sum(len(line) for line in lines[-tail:]) if tail else path.stat().st_size
        try:
            while True:
                offset = _copy(path, offset, raw)
                if not follow:
                    return
                if reconcile(run_dir).get("state") in (*FINAL_STATES, "unreadable"):
                    _copy(path, offset, raw)  # whatever landed with the final status
                    return
                time.sleep(POLL_SECONDS)
        except KeyboardInterrupt:
            return


def _copy(path, offset: int, raw: bool = False) -> int:
    """Write the bytes of ``path`` after ``offset`` to stdout; returns the new offset.

    Unless ``raw``, text is decoded leniently (invalid UTF-8 shown as U+FFFD), carriage
    returns dropped, and other control characters but newline and tab shown escaped
    (``\\x1b[31m``), so a log line cannot retitle or clear the terminal.
    """
    from console.safe_text import visible

    try:
        with open(path, "rb") as handle:
            handle.seek(offset)
            data = handle.read()
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        return offset
    if data:
        if raw:
            sys.stdout.buffer.write(data)
        else:
            lines = data.decode("utf-8", errors="replace").split("\n")
            sys.stdout.write("\n".join(visible(line.replace("\r", "")) for line in lines))
        sys.stdout.flush()
    return offset + len(data)
