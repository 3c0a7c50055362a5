"""``lowrank plot RUN...``: train/val loss and error curves in the terminal, runs overlaid."""

from __future__ import annotations

from typing import Annotated, Optional

import typer


def register(app: typer.Typer) -> None:
    """Add the ``plot`` command."""

    @app.command(no_args_is_help=True)
    def plot(
        runs: Annotated[list[str], typer.Argument(help="run ids (unique prefixes are enough)")],
        metric: Annotated[Optional[list[str]], typer.Option(
            "--metric", "-m", help="any logged number: loss, err1, err5, lr, throughput, kd, at, ... (repeatable)")] = None,
        x: Annotated[str, typer.Option("--x", help="x axis: epoch, step, or time (training seconds, summed over "
                                                   "resumes)")] = "epoch",
        width: Annotated[Optional[int], typer.Option(help="chart width in characters")] = None,
        height: Annotated[int, typer.Option(help="chart height in lines")] = 18,
        no_color: Annotated[bool, typer.Option("--no-color", help="plain characters only")] = False,
    ) -> None:
        """Plot loss and top-1 error (or any logged metric), train and val, for one or more runs."""
        from lowrank.errors import UserError

        from console.plotting import AXES, available_metrics, render
        from console.runs import RunStore

        if x not in AXES:
            raise UserError(f"unknown x axis {x!r}", key="--x", hint=f"choose from {', '.join(AXES)}")
        metrics = metric or ["loss", "err1"]
        store = RunStore()
        series = []
        for prefix in runs:
            run = store.resolve(prefix)
            label = run.read_status().get("name") or run.run_id  # a checked status: name is a str
            if sum(1 for other in runs if other) > 1:
                label = f"{label} ({run.run_id[-4:]})"  # two runs of one preset share a name
            series.append((label, run.read_metrics()))
        logged = set().union(*(available_metrics(records) for _, records in series))
        missing = [name for name in metrics if name not in logged]
        if missing and logged:
            from console.safe_text import clean

            raise UserError(f"metric {clean(missing[0])!r} is not in these runs' metrics", key="--metric",
                            hint=f"logged: {', '.join(sorted(clean(name) for name in logged))}")
        text = render(series, metrics=metrics, width=width, height=height, color=not no_color, x=x)
        if not text:
            raise UserError("nothing to plot yet: no loss/error events in these runs' metrics.jsonl",
                            hint="wait for the first steps (lowrank logs RUN -f)")
        typer.echo(text)
