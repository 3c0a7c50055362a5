"""``lowrank scheduler status|stop|start``: the detached queue process."""

from __future__ import annotations

import json
from typing import Annotated, Optional

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
        import os

        from console.placement import default_max_cpu_runs
        from console.safe_text import clean

        slots = default_max_cpu_runs(os.cpu_count() or 1, store.home)
        typer.echo(f"CPU slots: {slots} (lowrank scheduler start --cpu-slots N, or cpu_slots in "
                   f"{clean(store.home / 'config.yaml')})")
        for item in queued:
            typer.echo(f"  {item.run_id}  needs {requirement_for(store.get(item.run_id)).describe()}"
                       + (f": {clean(item.waiting)}" if item.waiting else ""))

    @group.command()
    def stop() -> None:
        """Stop the scheduler (running runs keep going; queued runs wait for the next submit or start)."""
        from console.scheduler import stop_scheduler

        typer.echo("scheduler stopped" if stop_scheduler() else "no scheduler was running")

    @group.command()
    def start(
        cpu_slots: Annotated[Optional[int], typer.Option(
            "--cpu-slots", min=1, help="CPU runs at once on this host (kept in $LOWRANK_HOME/config.yaml; "
                                       "default one per two cores)")] = None,
    ) -> None:
        """Start the scheduler now (it exits by itself when the queue is empty)."""
        from console.scheduler import ensure_scheduler, set_cpu_slots

        if cpu_slots is not None:
            path = set_cpu_slots(cpu_slots)
            typer.echo(f"cpu_slots: {cpu_slots} (in {path}; the scheduler reads it every round)")
        pid = ensure_scheduler()
        typer.echo(f"scheduler started (pid {pid})" if pid else "a scheduler is already running")

    app.add_typer(group, name="scheduler")
