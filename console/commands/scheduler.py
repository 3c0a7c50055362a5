"""``lowrank scheduler status|stop|start``: the detached queue process."""

from __future__ import annotations

import json
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    """Add the ``scheduler`` command group."""
    group = typer.Typer(help="The background scheduler that starts queued runs when resources free up.",
                        no_args_is_help=True)

    @group.command()
    def status(as_json: Annotated[bool, typer.Option("--json", help="print as JSON")] = False) -> None:
        """Whether the scheduler runs, and the queue."""
        from console.runs import RunStore
        from console.scheduler import requirement_for, scheduler_info

        info = scheduler_info()
        store = RunStore()
        queued = store.list(["queued"])
        running = store.list(["running"])
        if as_json:
            info.update(queued_runs=[q.run_id for q in queued], running_runs=[r.run_id for r in running])
            typer.echo(json.dumps(info, indent=2))
            return
        state = f"running (pid {info.get('pid')}, since {info.get('started')})" if info["running"] else "not running"
        typer.echo(f"scheduler: {state}")
        typer.echo(f"queued: {len(queued)}   running: {len(running)}")
        for item in queued:
            typer.echo(f"  {item.run_id}  needs {requirement_for(store.get(item.run_id)).describe()}")

    @group.command()
    def stop() -> None:
        """Stop the scheduler (running runs keep going; queued runs wait for the next submit or start)."""
        from console.scheduler import stop_scheduler

        typer.echo("scheduler stopped" if stop_scheduler() else "no scheduler was running")

    @group.command()
    def start() -> None:
        """Start the scheduler now (it exits by itself when the queue is empty)."""
        from console.scheduler import ensure_scheduler

        pid = ensure_scheduler()
        typer.echo(f"scheduler started (pid {pid})" if pid else "a scheduler is already running")

    app.add_typer(group, name="scheduler")
