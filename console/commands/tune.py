"""``lowrank tune``: hyperparameter search with Optuna (Hyperband pruning), every trial a run.

Shape (a Typer group whose default command is ``run``)::

    lowrank tune [run] PRESET --space KEY=SPEC ... --trials N [--pruner hyperband|median|none]
                 [--metric best_val_err1] [--method M --budget B] [--backend local|slurm [--nodes N]]
                 [--parallel K] [--storage URL] [--name NAME] [--seed S] [--set K=V ...] [--cpu | --gpus N]
    lowrank tune show STUDY|last [--json] [--no-plot]
    lowrank tune resume STUDY --trials M [--parallel K]
    lowrank tune ls [--json]
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from typer.core import TyperGroup

STATE_STYLE = {"complete": "green", "finished": "green", "pruned": "dark_orange", "fail": "red", "failed": "red",
               "running": "cyan", "queued": "blue", "killed": "yellow", "vanished": "red", "waiting": "blue"}


class _DefaultRunGroup(TyperGroup):
    """A group where ``tune PRESET ...`` means ``tune run PRESET ...``."""

    def parse_args(self, ctx, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["run", *args]
        return super().parse_args(ctx, args)


def register(app: typer.Typer) -> None:
    """Add the ``tune`` group (run, show, resume, ls)."""
    group = typer.Typer(cls=_DefaultRunGroup, no_args_is_help=True,
                        help="Hyperparameter search (Optuna + Hyperband): `lowrank tune PRESET --space train.lr="
                             "log:1e-3:0.3 --trials 12`, then `lowrank tune show last`.")
    app.add_typer(group, name="tune")

    @group.command("run", no_args_is_help=True)
    def run(
        preset: Annotated[Path, typer.Argument(help="experiment YAML, e.g. presets/quickstart.yaml")],
        space: Annotated[list[str], typer.Option("--space", help="KEY=SPEC searched, repeatable; SPEC: log:LO:HI, "
                                                                 "float:LO:HI, int:LO:HI, cat:A,B,C")] = [],
        trials: Annotated[int, typer.Option("--trials", "-n", help="number of trials")] = 0,
        pruner: Annotated[str, typer.Option("--pruner", help="hyperband, median or none")] = "hyperband",
        metric: Annotated[str, typer.Option("--metric", help="minimised: best_val_err1 or final_val_err1")] = "best_val_err1",
        method: Annotated[Optional[str], typer.Option("--method", help="substitute method of every trial")] = None,
        budget: Annotated[Optional[float], typer.Option("--budget", help="parameter budget (fraction of dense) of "
                                                                         "every trial: hp solved per trial")] = None,
        backend: Annotated[str, typer.Option("--backend", help="local (this host's queue) or slurm")] = "local",
        nodes: Annotated[Optional[int], typer.Option("--nodes", help="with --backend slurm: each trial one job on N "
                                                                     "nodes (sets slurm.nodes)")] = None,
        parallel: Annotated[int, typer.Option("--parallel", "-j", help="trials in flight at once")] = 1,
        storage: Annotated[Optional[str], typer.Option("--storage", help="optuna storage URL (default: a journal "
                                                                         "file under $LOWRANK_HOME/studies/)")] = None,
        name: Annotated[Optional[str], typer.Option("--name", help="study name (default: preset name + time)")] = None,
        seed: Annotated[Optional[int], typer.Option("--seed", help="sampler seed")] = None,
        set_: Annotated[list[str], typer.Option("--set", "-s", help="override KEY.PATH=VALUE for every trial")] = [],
        gpus: Annotated[Optional[int], typer.Option("--gpus", help="GPUs per trial")] = None,
        cpu: Annotated[bool, typer.Option("--cpu", help="trials on the CPU")] = False,
        as_json: Annotated[bool, typer.Option("--json", help="print the final report as JSON")] = False,
        no_plot: Annotated[bool, typer.Option("--no-plot", help="no plots in the final report")] = False,
        poll: Annotated[float, typer.Option("--poll", hidden=True)] = 1.0,
    ) -> None:
        """Search KEY=SPEC spaces over a preset: each trial a queued run, pruned at epoch boundaries."""
        from lowrank.errors import UserError

        from console.scheduler import requirement_from_cli
        from console.tune import driver

        if trials < 1:
            raise UserError("--trials N is required (N >= 1)", key="--trials", hint="e.g. --trials 12")
        if cpu and gpus:
            raise UserError("--cpu cannot be combined with --gpus", key="--cpu")
        if nodes is not None:  # every trial a job on N Slurm nodes
            from console.commands.run import nodes_override

            if nodes > 1 and backend != "slurm":
                raise UserError(f"--nodes {nodes} is the node count of a Slurm job, but the trials run on "
                                f"--backend {backend}", key="--nodes", hint="add --backend slurm")
            set_ = [*set_, nodes_override(nodes)]
        manifest = driver.plan_study(preset, space=space, trials=trials, overrides=set_, metric=metric, pruner=pruner,
                                     method=method, budget=budget, backend=backend, parallel=parallel,
                                     storage=storage, name=name, seed=seed,
                                     requirement=requirement_from_cli(gpus=gpus, cpu=cpu),
                                     precheck_placement={"gpus": gpus, "cpu": cpu})
        driver.create_study(manifest)
        study = manifest["study"]
        if not as_json:
            typer.echo(f"study {study}: {trials} trial(s), {parallel} at a time, pruner {pruner}, metric {metric}, "
                       f"storage {manifest['storage']}\n  (Ctrl-C stops asking; running trials go on; "
                       f"`lowrank tune resume {study} --trials 0` collects them)")
        _drive(study, trials, parallel, poll, quiet=as_json)
        raise typer.Exit(_show(study, as_json=as_json, plots=not no_plot))

    @group.command("resume", no_args_is_help=True)
    def resume(
        study: Annotated[str, typer.Argument(help="study name (a unique part is enough, or 'last')")],
        trials: Annotated[int, typer.Option("--trials", "-n", help="more trials to run (0: only wait for those "
                                                                   "in flight)")] = 0,
        parallel: Annotated[Optional[int], typer.Option("--parallel", "-j", help="trials at once (default: as "
                                                                                 "before)")] = None,
        as_json: Annotated[bool, typer.Option("--json", help="print the final report as JSON")] = False,
        no_plot: Annotated[bool, typer.Option("--no-plot", help="no plots in the final report")] = False,
        poll: Annotated[float, typer.Option("--poll", hidden=True)] = 1.0,
    ) -> None:
        """Add trials to a study (and settle the trials an interrupted driver left running)."""
        from lowrank.errors import UserError

        from console.tune import study as studies

        if trials < 0:
            raise UserError(f"--trials must be >= 0, got {trials}", key="--trials")
        if parallel is not None and parallel < 1:
            raise UserError(f"--parallel must be >= 1, got {parallel}", key="--parallel")
        name = studies.resolve_study(study)
        with studies.manifest_lock(name):
            manifest = studies.read_manifest(name)
            manifest["trials_requested"] = int(manifest.get("trials_requested") or 0) + trials
            studies.write_manifest(manifest)
        if not as_json:
            typer.echo(f"study {name}: {trials} more trial(s)")
        _drive(name, trials, parallel, poll, quiet=as_json)
        raise typer.Exit(_show(name, as_json=as_json, plots=not no_plot))

    @group.command("show", no_args_is_help=True)
    def show(
        study: Annotated[str, typer.Argument(help="study name (a unique part is enough, or 'last')")],
        as_json: Annotated[bool, typer.Option("--json", help="print the report as JSON")] = False,
        no_plot: Annotated[bool, typer.Option("--no-plot", help="tables only")] = False,
    ) -> None:
        """Best trial, every trial, parameter importance, and objective plots of a study."""
        from console.tune import study as studies

        _show(studies.resolve_study(study), as_json=as_json, plots=not no_plot)

    @group.command("ls")
    def ls(as_json: Annotated[bool, typer.Option("--json", help="print a JSON list")] = False) -> None:
        """List studies: preset, space, metric, pruner, trial states, best value."""
        from console.safe_text import dumps, markup
        from console.tune.listing import list_studies

        found = list_studies()
        if as_json:
            typer.echo(dumps([{k: v for k, v in item.items() if k != "rows"} for item in found], indent=2))
            return
        if not found:
            typer.echo("no studies yet (lowrank tune PRESET --space KEY=SPEC --trials N)")
            return
        from rich.table import Table

        table = Table(box=None, header_style="bold", pad_edge=False)
        for column in ("study", "preset", "space", "metric", "pruner", "trials", "states", "best"):
            table.add_column(column, no_wrap=column != "space")
        for item in found:
            best = item["best"]
            table.add_row(markup(item["study"]), markup(item["preset"] or "-"), markup(" ".join(item["space"])),
                          markup(item["metric"] or "-"), markup(item["pruner"] or "-"),
                          f"{item['trials']}/{item['trials_requested'] or '?'}",
                          markup(", ".join(f"{k} {v}" for k, v in item["states"].items())),
                          f"{best['value']:.4g} (trial {best['number']})" if best else "-")
        _console().print(table)


def _drive(name: str, trials: int, parallel: Optional[int], poll: float, *, quiet: bool) -> None:
    from console.safe_text import clean
    from console.tune import driver

    say = (lambda text: None) if quiet else (lambda text: typer.echo(clean(text)))
    try:
        counts = driver.drive(name, trials, parallel=parallel, poll=poll, on_event=say)
    except KeyboardInterrupt:
        typer.echo(f"\nstopped asking for trials; those in flight keep running "
                   f"(lowrank tune resume {name} --trials 0 collects them)", err=True)
        raise typer.Exit(130)
    if not quiet:
        typer.echo(f"study {name}: " + ", ".join(f"{count} {state}" for state, count in sorted(counts.items())))


def _console():
    from rich.console import Console

    console = Console()
    return console if console.is_terminal else Console(width=200)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _show(name: str, *, as_json: bool = False, plots: bool = True) -> int:
    """Print the study's report; 0 when it has a best trial, else 1 (the exit code of run/resume)."""
    from console.safe_text import dumps, markup
    from console.tune.report import render_plots, study_report

    report = study_report(name)
    if as_json:
        typer.echo(dumps(report, indent=2))
        return 0 if report["best"] else 1
    from rich.table import Table

    console = _console()
    counts = ", ".join(f"{count} {state}" for state, count in sorted(report["counts"].items())) or "no trials"
    console.print(f"[bold]study {markup(name)}[/]  {markup(report['preset'])}  metric {markup(report['metric'])} "
                  f"(minimised)  pruner {markup(report['pruner'].get('name'))}  trials: {markup(counts)}",
                  highlight=False)
    best = report["best"]
    if best:
        params = "  ".join(f"{markup(key)}={markup(_fmt(value))}" for key, value in best["params"].items())
        console.print(f"[green]best: trial {best['number']}  {markup(report['metric'])} {best['value']:.4g}[/]  {params}\n"
                      f"      run {markup(best['run_id'] or '-')}", highlight=False)
    else:
        console.print("[yellow]no completed trial yet[/]")
    keys = [item["key"] for item in report["space"] or []]
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("trial", "state", "value", "epochs", *keys, "run"):  # a space key is the manifest's text
        table.add_column(markup(column), justify="right" if column not in ("state", "run") else "left", no_wrap=True)
    for trial in report["trials"]:
        style = STATE_STYLE.get(trial["state"], "")
        table.add_row(str(trial["number"]), f"[{style}]{trial['state']}[/]" if style else trial["state"],
                      "-" if trial["value"] is None else f"{trial['value']:.4g}",
                      "-" if trial["last_epoch"] is None else str(trial["last_epoch"]),
                      *[markup(_fmt(trial["params"].get(key, "-"))) for key in keys], markup(trial["run_id"] or "-"))
    console.print(table)
    if report["importance"]:
        console.print("parameter importance (optuna): " + "  ".join(
            f"{markup(key)} {value:.2f}" for key, value in report["importance"].items()), highlight=False)
    elif report["importance_note"]:
        console.print(f"[dim]{markup(report['importance_note'])}[/]")
    failed = [trial for trial in report["trials"] if trial["state"] == "fail" and trial["error"]]
    for trial in failed[-3:]:
        console.print(f"[red]trial {trial['number']}[/]: {markup(trial['error'], 300)}", highlight=False)
    if plots:
        text = render_plots(report, color=console.is_terminal)
        if text:
            typer.echo(text)
    return 0 if best else 1
