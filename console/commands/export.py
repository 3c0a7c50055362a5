"""``lowrank export tensorboard RUN...``: TensorBoard event files from runs' metrics.jsonl."""

from __future__ import annotations

from typing import Annotated

import typer

export_app = typer.Typer(help="Export runs to other tools' formats.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    """Add the ``export`` group."""
    app.add_typer(export_app, name="export")


@export_app.command("tensorboard", no_args_is_help=True)
def tensorboard(
    runs: Annotated[list[str], typer.Argument(help="run ids (tail, prefix, last, last~N), or 'all'")],
) -> None:
    """Write RUN_DIR/tensorboard/ for each run from its metrics; then tensorboard --logdir $LOWRANK_HOME/runs."""
    from lowrank.tensorboard import export_run

    from console.run_ids import resolve_in
    from console.runs import RunStore
    from console.safe_text import clean

    store = RunStore()
    targets = store.run_dirs() if runs == ["all"] else [resolve_in(store.root, text) for text in runs]
    for run in targets:
        written = export_run(run)
        typer.echo(f"{clean(run.run_id)}: {written} scalars -> {clean(run.file('tensorboard'))}")
    typer.echo(f"view them: tensorboard --logdir {clean(store.root)}")
