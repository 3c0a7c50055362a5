"""``lowrank kill RUN...``: stop runs and every process they started."""

from __future__ import annotations

import json
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    """Add the ``kill`` command."""

    @app.command(no_args_is_help=True)
    def kill(
        runs: Annotated[list[str], typer.Argument(help="run ids (unique prefixes are enough)")],
        force: Annotated[bool, typer.Option("--force", help="SIGKILL at once (no clean stop)")] = False,
        grace: Annotated[float, typer.Option("--grace", help="seconds to wait for a clean stop before SIGKILL")] = 10.0,
        as_json: Annotated[bool, typer.Option("--json", help="print one JSON report per run")] = False,
    ) -> None:
        """Stop runs: SIGTERM (the worker saves its metrics), then SIGKILL whatever is left."""
        from console import backends
        from console.runs import RunStore
        from console.safe_text import clean

        store = RunStore()
        targets = [store.resolve(prefix) for prefix in runs]  # every id checked before anything is signalled
        reports = [backends.for_run(run).kill(run, grace=grace, force=force) for run in targets]
        if as_json:
            typer.echo(json.dumps([report.to_dict() for report in reports], indent=2))
        else:
            for report in reports:
                colour = "red" if report.survivors or report.gpu_pids_left else "yellow"
                typer.secho(clean(f"{report.run_id}: {report.state_before} -> {report.state}: {report.message}"),
                            fg=colour)
        if any(report.survivors or report.gpu_pids_left for report in reports):
            raise typer.Exit(1)
