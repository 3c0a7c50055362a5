"""``lowrank compare``: budget-matched sweeps from a preset, their progress, tables and plots.

Shape (a Typer group whose default command is ``run``)::

    lowrank compare [run] PRESET --methods generic,tt,sep_hashed --budgets 0.02,0.05,0.1
                    [--seeds N] [--set K=V ...] [--gpus N | --cpu] [--detach] [--dry-run]
                    [--skip-unreachable] [--json]
    lowrank compare show SWEEP [--json | --csv] [--png FILE] [--metric test_err1]
                         [--x params,macs|latency|throughput] [--latency-on TEXT]
    lowrank compare resume SWEEP [--gpus N | --cpu] [--detach] [--json]
    lowrank compare ls [--json]

``SWEEP`` is a sweep id, a unique prefix or part of one, or ``last``. A preset path that
happens to be named like a subcommand (``show``) needs the explicit ``run``.
"""

from __future__ import annotations

import csv
import json
import sys
import time
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from typer.core import TyperGroup

POLL_SECONDS = 1.0
STATE_STYLE = {"running": "cyan", "queued": "blue", "finished": "green", "failed": "red", "killed": "yellow", "pruned": "dark_orange",
               "vanished": "red", "skipped": "dim", "unreadable": "magenta"}


class _DefaultRunGroup(TyperGroup):
    """A group where ``compare PRESET ...`` means ``compare run PRESET ...``."""

    def parse_args(self, ctx, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["run", *args]
        return super().parse_args(ctx, args)


def _split(text: str, what: str, cast=str) -> list:
    from lowrank.errors import UserError

    try:
        return [cast(part.strip()) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UserError(f"expected a comma-separated list of numbers, got {text!r}", key=what) from None


def _requirement(gpus: Optional[int], cpu: bool) -> dict[str, Any]:
    from lowrank.errors import UserError

    from console.scheduler import requirement_from_cli

    if cpu and gpus:
        raise UserError("--cpu cannot be combined with --gpus", key="--cpu")
    return requirement_from_cli(gpus=gpus, cpu=cpu)


def register(app: typer.Typer) -> None:
    """Add the ``compare`` group (run, show, resume, ls)."""
    group = typer.Typer(cls=_DefaultRunGroup, no_args_is_help=True,
                        help="Budget-matched comparisons: `lowrank compare PRESET --methods ... --budgets ...`, "
                             "then `lowrank compare show SWEEP`.")
    app.add_typer(group, name="compare")

    @group.command("run", no_args_is_help=True)
    def run(
        preset: Annotated[Path, typer.Argument(help="experiment YAML, e.g. presets/quickstart.yaml")],
        methods: Annotated[str, typer.Option("--methods", "-m", help="comma-separated methods, e.g. generic,tt,sep_hashed")],
        budgets: Annotated[str, typer.Option("--budgets", "-b", help="comma-separated fractions of the dense "
                                                                     "network's parameters, e.g. 0.05,0.1")] = "",
        seeds: Annotated[int, typer.Option("--seeds", help="seeds per (method, budget), from the preset's train.seed")] = 1,
        set_: Annotated[list[str], typer.Option("--set", "-s", help="override KEY.PATH=VALUE for every run, repeatable")] = [],
        grid: Annotated[list[str], typer.Option("--grid", "-g", help="also sweep KEY.PATH=V1,V2,... (repeatable; "
                                                                     "cartesian with methods x budgets x seeds)")] = [],
        gpus: Annotated[Optional[int], typer.Option("--gpus", help="GPUs per run")] = None,
        cpu: Annotated[bool, typer.Option("--cpu", help="run on the CPU")] = False,
        detach: Annotated[bool, typer.Option("--detach", help="queue the runs and return at once")] = False,
        dry_run: Annotated[bool, typer.Option("--dry-run", help="print the plan only; create nothing")] = False,
        skip_unreachable: Annotated[bool, typer.Option("--skip-unreachable",
                                                       help="launch the reachable runs when some budgets are "
                                                            "out of a method's range (default: refuse)")] = False,
        as_json: Annotated[bool, typer.Option("--json", help="print JSON (the plan, or the sweep)")] = False,
        backend: Annotated[Optional[str], typer.Option("--backend", help="local (this host's queue) or slurm (the "
                                                                         "sweep as one Slurm job array)")] = None,
        nodes: Annotated[Optional[int], typer.Option("--nodes", help="Slurm: each run one job on N nodes, "
                                                                     "resources.nproc ranks on each (sets slurm.nodes)")] = None,
    ) -> None:
        """Plan a sweep (method x budget x seed x --grid keys, hp solved per budget) and queue its runs."""
        from console import compare

        if backend is not None:
            from console.commands.run import backend_override

            set_ = [*set_, backend_override(backend)]
        if nodes is not None:  # every run of the sweep spans N Slurm nodes; refused here for a local sweep
            from console.commands.run import check_nodes_backend, nodes_override
            from lowrank.config import load

            set_ = [*set_, nodes_override(nodes)]
            check_nodes_backend(load(preset, set_), nodes)

        requirement = _requirement(gpus, cpu)
        plan = compare.plan_sweep(preset, _split(methods, "--methods"), _split(budgets, "--budgets", float),
                                  seeds, set_, grid=compare.parse_grid(grid))
        if dry_run and as_json:
            typer.echo(json.dumps(plan.to_dict(), indent=2))
            return
        if not as_json:
            _print_plan(plan)
        if dry_run:
            return
        from console.precheck import precheck
        from lowrank.config import load

        # what the workers would find too late (CUDA, GPUs, dataset files, teacher), before any run exists
        precheck(load(preset, set_), gpus=gpus, cpu=cpu, source=preset, overrides=set_, network=False)
        if plan.problems and skip_unreachable and not as_json:
            typer.secho(f"warning: skipping {len(plan.problems)} unreachable run(s):\n"
                        + compare.unreachable_message(plan), fg="yellow", err=True)
        if plan.problems and not skip_unreachable:
            from lowrank.errors import UserError

            pairs = len({(entry.method, entry.budget) for entry in plan.problems})
            raise UserError(f"nothing launched: {pairs} (method, budget) pair(s) cannot reach their budget"
                            + (" (listed above)" if not as_json else f"\n{compare.unreachable_message(plan)}"),
                            key="--budgets", hint="choose budgets inside the reachable ranges, drop those methods, "
                                                  "or pass --skip-unreachable to launch the rest")
        manifest = compare.launch_sweep(plan, requirement, skip_unreachable=skip_unreachable)
        sweep_id = manifest["sweep"]
        if detach:
            if as_json:
                typer.echo(json.dumps(_launched(manifest), indent=2))
            else:
                typer.echo(f"sweep {sweep_id}: {len(_launched(manifest)['runs'])} run(s) queued\n"
                           f"  watch:   lowrank compare show {sweep_id}   (or lowrank ls)\n"
                           f"  resume:  lowrank compare resume {sweep_id}")
            return
        if not as_json:
            typer.echo(f"sweep {sweep_id}: {len(_launched(manifest)['runs'])} run(s) queued; waiting "
                       f"(Ctrl-C stops watching, the runs keep going)")
        code = _watch(sweep_id, quiet=as_json)
        _show(sweep_id, as_json=as_json)
        raise typer.Exit(code)

    @group.command("show", no_args_is_help=True)
    def show(
        sweep: Annotated[str, typer.Argument(help="sweep id (a unique part is enough, or 'last')")],
        as_json: Annotated[bool, typer.Option("--json", help="print the table rows and the runs as JSON")] = False,
        as_csv: Annotated[bool, typer.Option("--csv", help="print the table as CSV")] = False,
        png: Annotated[Optional[Path], typer.Option("--png", help="also save both plots to this PNG "
                                                                  "(needs: pip install 'lowrank\\[plot]')")] = None,
        metric: Annotated[str, typer.Option("--metric", help="error plotted: test_err1, best_val_err1 or "
                                                             "final_val_err1")] = "test_err1",
        no_plot: Annotated[bool, typer.Option("--no-plot", help="the table only")] = False,
        x: Annotated[str, typer.Option("--x", help="x axes of the plots, comma-separated: params, macs, latency "
                                                   "(measured ms at batch 1), throughput (img/s)")] = "params,macs",
        latency_on: Annotated[Optional[str], typer.Option("--latency-on", help="the device whose measured latencies "
                                                                              "are shown (a part of its key, e.g. "
                                                                              "'x2 threads', 'H100')")] = None,
    ) -> None:
        """The sweep's table (method x budget, mean ± std over seeds) and error-vs-cost plots."""
        from lowrank.errors import UserError

        from console import compare

        if metric not in compare.ERROR_METRICS:
            raise UserError(f"unknown metric {metric!r}", key="--metric", hint=", ".join(compare.ERROR_METRICS))
        if as_json and as_csv:
            raise UserError("give one of --json and --csv", key="--csv")
        axes = compare.parse_axes(x)
        if png is not None:  # its extra before the sweep is read or anything drawn
            from lowrank.extras import require

            require("plot", "--png", "--png")
        _show(compare.resolve_sweep(sweep), as_json=as_json, as_csv=as_csv, png=png, metric=metric,
              plots=not no_plot, x=[axis.name for axis in axes], latency_on=latency_on)

    @group.command("resume", no_args_is_help=True)
    def resume(
        sweep: Annotated[str, typer.Argument(help="sweep id (a unique part is enough, or 'last')")],
        gpus: Annotated[Optional[int], typer.Option("--gpus", help="GPUs per relaunched run (default: as before)")] = None,
        cpu: Annotated[bool, typer.Option("--cpu", help="relaunch on the CPU")] = False,
        detach: Annotated[bool, typer.Option("--detach", help="queue and return at once")] = False,
        as_json: Annotated[bool, typer.Option("--json", help="print what was done as JSON")] = False,
    ) -> None:
        """Relaunch the runs of a sweep that did not finish (failed, killed, vanished)."""
        from console import compare

        sweep_id = compare.resolve_sweep(sweep)
        actions = compare.resume_sweep(sweep_id, _requirement(gpus, cpu) or None)
        redone = [action for action in actions if action["action"] in ("resumed", "relaunched")]
        if as_json:
            typer.echo(json.dumps({"sweep": sweep_id, "actions": actions}, indent=2))
        else:
            for action in actions:
                where = f"{action['method']} @ {_budget(action['budget'])} seed {action['seed']}"
                if action["action"] == "kept":
                    typer.echo(f"  kept        {where}: {action['state']}")
                else:
                    typer.secho(f"  {action['action']:<11} {where}: {action['state']} -> {action['run_id']}",
                                fg="cyan")
            typer.echo(f"sweep {sweep_id}: {len(redone)} run(s) re-queued")
        if detach or not redone:
            return
        code = _watch(sweep_id, quiet=as_json)
        if not as_json:
            _show(sweep_id)
        raise typer.Exit(code)

    @group.command("ls")
    def ls(as_json: Annotated[bool, typer.Option("--json", help="print a JSON list")] = False) -> None:
        """List sweeps with their methods, budgets, seeds and run states."""
        from console import compare

        from console.safe_text import dumps, markup

        sweeps = compare.list_sweeps()
        if as_json:
            typer.echo(dumps(sweeps, indent=2))
            return
        if not sweeps:
            typer.echo("no sweeps yet (lowrank compare PRESET --methods ... --budgets ...)")
            return
        from rich.table import Table

        table = Table(box=None, header_style="bold", pad_edge=False)
        for column in ("sweep", "created", "preset", "model", "methods", "budgets", "seeds", "runs"):
            table.add_column(column)
        for row in sweeps:  # every field read from a manifest: shown as plain text, whatever its type
            states = ", ".join(f"[{STATE_STYLE.get(state, '')}]{count} {markup(state)}[/]"
                               for state, count in row["states"].items())
            table.add_row(markup(row["sweep"]), markup(row["created"] or "-"), markup(row["preset"]),
                          markup(row["model"]), markup(_joined(row["methods"])), markup(_joined(row["budgets"])),
                          markup(_joined(row["seeds"])), states)
        _console().print(table)


# ---------------------------------------------------------------- printing


def _console():
    """A rich console; piped output is not wrapped at 80 columns (tables stay one line per row)."""
    from rich.console import Console

    console = Console()
    return console if console.is_terminal else Console(width=max(console.width, 160))


def _joined(values: Any) -> str:
    """A manifest's list (methods, budgets, seeds) as ``a,b,c``; anything else as its text."""
    if not isinstance(values, (list, tuple)):
        return "" if values is None else str(values)
    return ",".join(f"{value:g}" if isinstance(value, (int, float)) and not isinstance(value, bool) else str(value)
                    for value in values)


def _budget(budget: float | None) -> str:
    return "ref" if budget is None else f"{budget:g}"


def _seconds(value: float | None) -> str:
    from console.commands.ls import duration

    return "-" if value is None else f"{value:.1f}s" if value < 60 else duration(value)


def _launched(manifest: dict) -> dict:
    return {"sweep": manifest["sweep"], "manifest": str(_manifest_file(manifest["sweep"])),
            "runs": [{"run_id": e["run_id"], "method": e["method"], "budget": e["budget"], "seed": e["seed"],
                      "hp": e["hp"]} for e in manifest["entries"] if e.get("run_id")],
            "skipped": [{"method": e["method"], "budget": e["budget"], "seed": e["seed"], "problem": e["problem"]}
                        for e in manifest["entries"] if not e.get("run_id")]}


def _manifest_file(sweep_id: str) -> Path:
    from console.compare import manifest_path

    return manifest_path(sweep_id)


def _print_plan(plan) -> None:
    """One row per (method, budget) -- seeds share the solved hp -- and the problems."""
    from rich.table import Table

    console = _console()
    title = (f"plan: {plan.name} ({plan.model} on {plan.dataset}), dense {plan.dense_params:,} params, "
             f"{plan.dense_macs:,} mult-adds; seeds {','.join(map(str, plan.seeds))}")
    from console.compare import grid_label
    from console.safe_text import markup

    table = Table(title=title, box=None, header_style="bold", pad_edge=False, title_justify="left")
    gridded = bool(plan.grid)
    for column, justify in (("method", "left"), *((("grid", "left"),) if gridded else ()), ("budget", "right"),
                            ("hp", "right"), ("params", "right"), ("x dense", "right"), ("mult-adds", "right"),
                            ("gap", "right"), ("runs", "right"), ("", "left")):
        table.add_column(column, justify=justify, no_wrap=True)
    seen: dict[tuple, list] = {}
    for entry in plan.entries:
        seen.setdefault((entry.method, grid_label(entry.grid), entry.budget), []).append(entry)
    problems = []
    for (method, grid, budget), entries in seen.items():
        entry = entries[0]
        cells = [markup(method), *([markup(grid)] if gridded else []), _budget(budget)]
        if entry.problem:
            table.add_row(*cells, "-", "-", "-", "-", "-", "0", "[red]unreachable[/]")
            problems.append(f"  {method} @ {_budget(budget)}{f' ({grid})' if grid else ''}: {entry.problem}")
            continue
        dense = entry.dense_params or plan.dense_params
        table.add_row(*cells, f"{entry.hp:.6g}" if entry.hp is not None else "-",
                      f"{entry.params:,}", f"{entry.params / dense:.4f}", f"{entry.macs:,}",
                      f"{100 * entry.gap:+.2f}%" if entry.gap is not None else "-", str(len(entries)),
                      "[dim]reference[/]" if entry.reference else f"[dim]{entry.hp_name}[/]")
    console.print(table)
    if problems:
        console.print("[red]unreachable:[/]\n" + "\n".join(problems), highlight=False)
    for note in plan.notes:
        console.print(f"[dim]note: {note}[/]")
    runnable = len(plan.runnable)
    console.print(f"{runnable} run(s) planned" + (f", {len(plan.problems)} unreachable" if plan.problems else ""))


def _progress_table(sweep_id: str, rows: list[dict]):
    from rich.table import Table

    from console.safe_text import markup

    counts: dict[str, int] = {}
    for row in rows:
        counts[row["state"]] = counts.get(row["state"], 0) + 1
    caption = "  ".join(f"{count} {state}" for state, count in sorted(counts.items()))
    table = Table(title=f"{sweep_id}: {caption}", box=None, header_style="bold", pad_edge=False, title_justify="left")
    gridded = any(row.get("grid") for row in rows)
    for column, justify in (("method", "left"), *((("grid", "left"),) if gridded else ()), ("budget", "right"),
                            ("seed", "right"), ("state", "left"), ("epoch", "right"), ("val err", "right"),
                            ("best", "right"), ("run", "left")):
        table.add_column(column, justify=justify)
    for row in rows:
        state = row["state"] or "-"
        pct = lambda value: "-" if value is None else f"{value:.2f}%"  # noqa: E731
        table.add_row(markup(row["method"]), *([markup(row.get("grid") or "")] if gridded else []),
                      _budget(row["budget"]), str(row["seed"]),
                      f"[{STATE_STYLE.get(state, '')}]{markup(state)}[/]",
                      f"{markup(row['epoch'] or 0)}/{markup(row['epochs'] or '?')}", pct(row["last_val_err1"]),
                      pct(row["best_val_err1"]), markup(row["run_id"] or (row["error"] or ""), 60))
    return table


def _watch(sweep_id: str, *, quiet: bool = False, poll: float = POLL_SECONDS) -> int:
    """Redraw the sweep's states until no run is queued or running; 0 if all finished.

    Ctrl-C stops watching only: the runs belong to the scheduler and keep going.
    """
    from rich.live import Live

    from console import compare

    def poll_until_done(live=None) -> list[dict]:
        while True:
            rows = compare.progress(compare.read_manifest(sweep_id), None)
            if live is not None:
                live.update(_progress_table(sweep_id, rows), refresh=True)
            if compare.is_done(rows):
                return rows
            time.sleep(poll)

    try:
        if quiet:
            rows = poll_until_done()
        else:
            console = _console()
            with Live(console=console, auto_refresh=False, transient=False) as live:
                rows = poll_until_done(live)
            if not console.is_terminal:
                console.line()  # the last frame of a non-terminal Live ends without a newline
    except KeyboardInterrupt:
        typer.secho(f"\nstopped watching; the runs keep going.\n  watch:   lowrank compare show {sweep_id}  "
                    f"(or lowrank ls)\n  resume:  lowrank compare resume {sweep_id}", fg="yellow", err=True)
        raise typer.Exit(130) from None
    return 0 if all(row["state"] in ("finished", "skipped") for row in rows) else 1


def _show(sweep_id: str, *, as_json: bool = False, as_csv: bool = False, png: Optional[Path] = None,
          metric: str = "test_err1", plots: bool = True, x: Optional[list[str]] = None,
          latency_on: Optional[str] = None) -> None:
    from console import compare

    manifest = compare.read_manifest(sweep_id)
    runs = compare.run_rows(manifest)
    summary = compare.summarize(runs, manifest.get("methods"))
    # decided before anything is printed or written: latencies of two devices never share an axis
    plot_key = compare.plot_device(summary, x, latency_on)
    shown, note = compare.shown_device(summary, latency_on)
    summary = [compare.with_device(row, shown) for row in summary]
    if png is not None:
        compare.save_png(summary, png, metric=metric, title=f"{manifest.get('name')} ({sweep_id})", x=x,
                         device=plot_key)
    if as_json:
        from console.safe_text import dumps

        typer.echo(dumps({"sweep": sweep_id, "preset": manifest.get("preset"),
                               "overrides": manifest.get("overrides"), "model": manifest.get("model"),
                               "dataset": manifest.get("dataset"), "dense_params": manifest.get("dense_params"),
                               "dense_macs": manifest.get("dense_macs"), "latency_device": shown,
                               "latency_devices": compare.summary_devices(summary), "latency_note": note,
                               "rows": summary, "runs": runs,
                               "png": str(png) if png else None}, indent=2))  # NaN/inf -> null
        return
    if as_csv:
        columns = [key for key in summary[0] if key not in ("states", "seeds", "latency")] if summary else []
        writer = csv.DictWriter(sys.stdout, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        from console.safe_text import clean  # a method or grid value from the manifest: no terminal control

        writer.writerows({key: clean(value) if isinstance(value, str) else value for key, value in row.items()}
                         for row in summary)
        if note:
            typer.echo(f"note: the latency columns are those measured on {clean(shown)}; {clean(note)}", err=True)
        return
    _print_table(manifest, summary, runs, shown, note)
    if plots:
        text = compare.render_plots(summary, metric=metric, x=x, device=plot_key, color=sys.stdout.isatty())
        typer.echo(text if text else "(no finished runs to plot yet)")
    if png is not None:
        typer.echo(f"saved {png}")


def _print_table(manifest: dict, summary: list[dict], runs: list[dict], device: Optional[str] = None,
                 note: Optional[str] = None) -> None:
    from rich.table import Table

    from console.compare import fmt_mean_std
    from console.safe_text import markup

    console = _console()
    dense_params, dense_macs = manifest.get("dense_params"), manifest.get("dense_macs")
    title = (f"{markup(manifest['sweep'])}: {markup(manifest.get('name'))} ({markup(manifest.get('model'))} on "
             f"{markup(manifest.get('dataset'))}), dense "
             f"{f'{dense_params:,}' if isinstance(dense_params, int) else '?'} params / "
             f"{f'{dense_macs:,}' if isinstance(dense_macs, int) else '?'} mult-adds; "
             f"top-1 error %, mean ± std over seeds")
    caption = None
    if device:  # the device the latency columns were measured on (one key: never averaged across)
        batches = {row.get("throughput_batch") for row in summary} - {None}
        caption = (f"latency ms at batch 1 and img/s{f' at batch {next(iter(batches))}' if len(batches) == 1 else ''}"
                   f" measured on {markup(device)}" + (f"; {markup(note)}" if note else ""))
    table = Table(title=title, header_style="bold", title_justify="left", show_edge=False,
                  caption=caption, caption_justify="left")
    gridded = any(row.get("grid") for row in summary)
    timed = device is not None
    for column, justify in (("method", "left"), *((("grid", "left"),) if gridded else ()), ("budget", "right"),
                            ("hp", "right"), ("params", "right"),
                            ("x dense", "right"), ("mult-adds", "right"), ("done", "right"), ("final val", "right"),
                            ("best val", "right"), ("test", "right"), ("train time", "right"),
                            *((("latency ms (b1)", "right"), ("img/s", "right")) if timed else ())):
        table.add_column(column, justify=justify)
    for row in summary:
        hp = row.get("hp")
        done = f"{row['finished']}/{row['runs']}"
        if row["finished"] < row["runs"]:
            others = ", ".join(f"{n} {s}" for s, n in row["states"].items() if s != "finished")
            done = f"{done} [yellow]({markup(others)})[/]"
        table.add_row(markup(row["method"]), *([markup(row.get("grid") or "")] if gridded else []),
                      _budget(row["budget"]), "-" if hp is None else f"{hp:.4g}",
                      f"{row['params']:,}" if row.get("params") else "-",
                      f"{row['params_fraction']:.4f}" if row.get("params_fraction") else "-",
                      f"{row['macs']:,}" if row.get("macs") else "-", done,
                      fmt_mean_std(row["final_val_err1_mean"], row["final_val_err1_std"]),
                      fmt_mean_std(row["best_val_err1_mean"], row["best_val_err1_std"]),
                      fmt_mean_std(row["test_err1_mean"], row["test_err1_std"]),
                      _seconds(row["train_seconds_mean"]),
                      *((fmt_mean_std(row.get("latency_ms_b1_mean"), row.get("latency_ms_b1_std"), 3),
                         fmt_mean_std(row.get("throughput_mean"), row.get("throughput_std"), 0)) if timed else ()))
    console.print(table)
    failed = [run for run in runs if run["state"] in ("failed", "killed", "vanished", "unreadable")]
    for run in failed:
        console.print(f"[red]{markup(run['state'])}[/] {markup(run['method'])} @ {_budget(run['budget'])}"
                      f"{' (' + markup(run['grid']) + ')' if run.get('grid') else ''} seed "
                      f"{markup(run['seed'])} ({markup(run['run_id'])}): {markup(run['error'], 500)}", highlight=False)
    if failed:
        console.print(f"relaunch them: lowrank compare resume {manifest['sweep']}")
