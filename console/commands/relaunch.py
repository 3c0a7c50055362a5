"""``lowrank relaunch RUN``: train the same config again, or ``--resume`` it in place."""

from __future__ import annotations

import json
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    """Add the ``relaunch`` command."""

    @app.command(no_args_is_help=True)
    def relaunch(
        run: Annotated[str, typer.Argument(help="run id (a unique prefix is enough)")],
        resume: Annotated[bool, typer.Option("--resume", help="continue this run from its checkpoint")] = False,
        detach: Annotated[bool, typer.Option("--detach", help="queue it for the scheduler and return")] = False,
        as_json: Annotated[bool, typer.Option("--json", help="print the result as JSON")] = False,
    ) -> None:
        """Relaunch a run: a new run from its resolved config, or the same run resumed."""
        from console.runs import RunStore, relaunch as prepare
        from console.scheduler import requirement_for, submit

        source = RunStore().resolve(run)
        target = prepare(source, resume=resume)
        if detach:
            submit(target, requirement_for(target), resume=resume)
            typer.echo(json.dumps({"run_id": target.run_id, "run_dir": str(target.path), "state": "queued",
                                   "relaunched_from": source.run_id, "resume": resume})
                       if as_json else target.run_id)
            return
        from console.commands.run import run_foreground

        requirement = requirement_for(target)
        code = run_foreground(target, resume=resume, gpus=[], cpu=requirement.gpus == 0, as_json=as_json)
        raise typer.Exit(code)
