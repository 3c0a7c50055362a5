"""lowrank-console: the interactive terminal console (Textual).

``lowrank-console [--home PATH]``: GPUs, every run, live curves; launch, kill, relaunch.
Starting it imports neither torch nor ``lowrank.config`` (those load in worker threads
when a preset is validated), so the first frame appears quickly.
"""

from __future__ import annotations

import argparse


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``lowrank-console``."""
    parser = argparse.ArgumentParser(prog="lowrank-console", description="the lowrank terminal console")
    parser.add_argument("--home", default=None, help="LOWRANK_HOME to show (default: $LOWRANK_HOME or ./.lowrank)")
    args = parser.parse_args(argv)
    from .app import run_app

    run_app(args.home)
