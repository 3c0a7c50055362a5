"""``lowrank study approx|init``: layer studies that judge a substitute on a CPU before training it.

``approx`` fits every method (or the ``--method`` ones) to random dense matrices and reports the
final error against parameters; ``init`` reports the effective matrix's statistics at
initialisation against Glorot/Kaiming. The library side is :mod:`lowrank.studies`.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from typing import Annotated, Any

import typer

study_app = typer.Typer(help="Layer studies: approximation of dense matrices, initialisation statistics.",
                        no_args_is_help=True)

MethodOpt = Annotated[list[str], typer.Option(
    "--method", help="METHOD or METHOD[key=value,...] (repeatable; default: every registered method).")]
HpOpt = Annotated[list[str], typer.Option(
    "--hp", help="METHOD=v1,v2,... hyperparameter values for that method (repeatable).")]


def _methods(specs: list[str]) -> list[tuple[Any, dict]] | None:
    from lowrank.errors import UserError
    from lowrank.studies.layers import parse_method

    chosen = []
    for text in specs:
        try:
            chosen.append(parse_method(text))
        except (KeyError, ValueError) as error:
            raise UserError(str(error.args[0] if error.args else error), key="--method",
                            hint="lowrank methods lists the methods and their options") from None
    return chosen or None


def _grids(specs: list[str], methods: list[tuple[Any, dict]] | None) -> dict[str, list]:
    from lowrank.errors import UserError
    from lowrank.methods import get_method

    grids: dict[str, list] = {}
    for text in specs:
        name, sep, values = text.partition("=")
        try:
            method = get_method(name.strip())
        except KeyError as error:
            raise UserError(str(error.args[0]), key="--hp", hint="use METHOD=v1,v2,...") from None
        if not sep or method.hp is None:
            raise UserError(f"{text!r}: expected METHOD=v1,v2,... for a method with a hyperparameter",
                            key="--hp", hint=f"{method.name} has no hyperparameter" if method.hp is None else None)
        try:
            grids[method.name] = [method.hp.validate(float(v)) for v in values.split(",") if v.strip()]
        except ValueError as error:
            raise UserError(f"{text!r}: {error}", key="--hp",
                            hint=f"{method.hp.name} is in [{method.hp.low:g}, {method.hp.high:g}]") from None
        if not grids[method.name]:
            raise UserError(f"{text!r}: no values", key="--hp", hint="use METHOD=v1,v2,...")
    if methods is not None:
        named = {m.name for m, _ in methods}
        extra = sorted(set(grids) - named)
        if extra:
            raise UserError(f"--hp names {', '.join(extra)}, which no --method selects", key="--hp",
                            hint="add --method for it, or drop --method to study every method")
    return grids


def _ints(text: str, option: str, low: int = 1) -> list[int]:
    from lowrank.errors import UserError

    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        values = []
    if not values or min(values) < low:
        raise UserError(f"expected comma-separated integers >= {low}, got {text!r}", key=option)
    return values


def _progress(total: int, label: str):
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    # stderr, so --json/--csv and pipes get clean output
    return Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=Console(stderr=True), transient=True)


def _csv(rows: list[dict], columns: list[str]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (json.dumps(v) if isinstance(v, (dict, list)) else v) for k, v in row.items()})
    return out.getvalue()


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None or (isinstance(value, float) and not math.isfinite(value)) else format(value, spec)


def _plot(rows: list[dict], y: str, title: str, x: str = "params") -> str:
    import plotext as plt

    from console.safe_text import clean

    markers = ["dot", "x", "+", "o", "*", "#", "@", "$", "%", "&", "s", "^"]
    plt.clear_figure()
    series: dict[str, list[tuple[float, float]]] = {}
    for row in rows:
        if row.get(x) and row.get(y) is not None and math.isfinite(row[y]) and row[y] > 0:
            series.setdefault(row["series"], []).append((float(row[x]), float(row[y])))
    if not series:
        return ""
    for index, (name, points) in enumerate(series.items()):
        points.sort()
        plt.plot([p[0] for p in points], [p[1] for p in points], label=clean(name),
                 marker=markers[index % len(markers)])
    plt.xscale("log")
    plt.yscale("log")
    plt.title(title)
    plt.xlabel(x)
    plt.plotsize(min(plt.terminal_width() or 100, 120), 24)
    chart = plt.build()
    plt.clear_figure()
    return chart


APPROX_COLUMNS = ["series", "label", "method", "hp", "options", "params", "mean", "std", "relative_mean", "note"]


@study_app.command()
def approx(
    method: MethodOpt = [],  # noqa: B006 - typer reads the default
    hp: HpOpt = [],  # noqa: B006
    n: Annotated[int, typer.Option("--n", help="Size N of the N x N target matrices.")] = 32,
    target: Annotated[str, typer.Option(help="Target entries: normal N(0, 1/N) or uniform (same variance).")] = "normal",
    optimizer: Annotated[str, typer.Option(help="adam, sgd (momentum 0.9) or lbfgs.")] = "adam",
    steps: Annotated[int, typer.Option(help="Optimiser steps per fit.")] = 1000,
    lr: Annotated[float, typer.Option(help="Learning rate.")] = 1e-2,
    seeds: Annotated[int, typer.Option(help="Seeds (target and initialisation) per variant.")] = 3,
    jobs: Annotated[int, typer.Option(help="Worker processes (default: up to 2 of the CPUs).")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print rows and settings as JSON.")] = False,
    as_csv: Annotated[bool, typer.Option("--csv", help="Print rows as CSV.")] = False,
    plot: Annotated[bool, typer.Option(help="Draw error vs parameters (plotext) under the table.")] = True,
) -> None:
    """Fit each layer to random N x N matrices: final mean-squared error (mean ± std over seeds) vs parameters."""
    from lowrank.errors import UserError

    try:
        from lowrank.studies.approx import ApproxSettings
        settings = ApproxSettings(n=n, target=target, optimizer=optimizer, steps=steps, lr=lr, seeds=seeds)
    except ValueError as error:
        key = str(error).split(" ", 1)[0]
        raise UserError(str(error), key=f"--{key}") from None
    from lowrank.studies.approx import run_study, settings_dict
    from lowrank.studies.layers import default_variants

    methods = _methods(method)
    variants = default_variants(n, methods, _grids(hp, methods))
    workers = jobs if jobs > 0 else max(1, min(2, os.cpu_count() or 1))
    with _progress(len(variants), "study approx") as bar:
        task = bar.add_task("approx", total=len(variants))
        rows = run_study(variants, settings, progress=lambda _v: bar.advance(task), jobs=workers)
    if as_json:
        typer.echo(json.dumps({"settings": settings_dict(settings), "rows": rows}, indent=2))
        return
    if as_csv:
        typer.echo(_csv(rows, APPROX_COLUMNS), nl=False)
        return
    from console.safe_text import clean

    typer.echo(f"N={n}, target {target} (entry variance 1/N), {optimizer} lr={lr:g}, {steps} steps, {seeds} seeds; "
               f"error = mean((W - T)^2) over the N^2 entries, mean ± std over seeds")
    typer.echo(f"{'layer':<40} {'params':>7} {'error':>10} {'± std':>9} {'relative':>9}  note")
    for row in rows:
        typer.echo(f"{clean(row['label']):<40} {_fmt(row['params'], 'd'):>7} {_fmt(row['mean'], '.4g'):>10} "
                   f"{_fmt(row['std'], '.2g'):>9} {_fmt(row['relative_mean'], '.3f'):>9}  {clean(row['note'])}")
    if plot:
        chart = _plot(rows, "mean", f"approximation error vs parameters (N={n})")
        if chart:
            typer.echo("\n" + chart)


INIT_COLUMNS = ["series", "label", "method", "hp", "options", "n", "params", "std", "std_spread", "mean", "diag_mean",
                "glorot_std", "kaiming_std", "torch_default_std", "std_over_glorot", "note"]


@study_app.command()
def init(
    method: MethodOpt = [],  # noqa: B006
    hp: Annotated[list[str], typer.Option(
        "--hp", help="METHOD=v1,v2,... (repeatable; default acdc=16, the notes' 16-layer stack; others at "
                     "their declared example value).")] = [],  # noqa: B006
    dims: Annotated[str, typer.Option(help="Comma-separated dimensions N.")] = "4,8,16,32,64,128,256",
    seeds: Annotated[int, typer.Option(help="Initialisations averaged per row.")] = 3,
    as_json: Annotated[bool, typer.Option("--json", help="Print rows as JSON.")] = False,
    as_csv: Annotated[bool, typer.Option("--csv", help="Print rows as CSV.")] = False,
    plot: Annotated[bool, typer.Option(help="Draw effective std vs N (plotext) under the table.")] = True,
) -> None:
    """Effective dense matrix of each layer at initialisation: std and mean vs Glorot/Kaiming, per dimension."""
    from lowrank.errors import UserError

    ns = _ints(dims, "--dims", low=2)
    if seeds < 1:
        raise UserError(f"expected an integer >= 1, got {seeds}", key="--seeds")
    from lowrank.methods import list_methods
    from lowrank.studies.init import run_init_study
    from lowrank.studies.layers import Variant

    methods = _methods(method) or [(m, {}) for m in list_methods()]
    grids = _grids(hp or (["acdc=16"] if any(m.name == "acdc" for m, _ in methods) else []), methods)
    variants = []
    for m, options in methods:
        for value in grids.get(m.name) or [m.hp.default if m.hp else None]:
            variants.append(Variant(m.name, value, dict(options)))
    with _progress(len(variants) * len(ns), "study init") as bar:
        task = bar.add_task("init", total=len(variants) * len(ns))
        rows = run_init_study(variants, ns, seeds, progress=lambda _v, _n: bar.advance(task))
    if as_json:
        typer.echo(json.dumps({"settings": {"dims": ns, "seeds": seeds}, "rows": rows}, indent=2))
        return
    if as_csv:
        typer.echo(_csv(rows, INIT_COLUMNS), nl=False)
        return
    from console.safe_text import clean

    typer.echo(f"effective matrix W (identity pushed through the N -> N 1x1 layer) at initialisation, "
               f"{seeds} seeds; glorot = sqrt(2/(in+out)), torch = 1/sqrt(3 in) (PyTorch's default init)")
    typer.echo(f"{'layer':<28} {'N':>4} {'params':>7} {'std':>8} {'glorot':>7} {'std/gl':>7} {'torch':>7} "
               f"{'mean':>8} {'diag mean':>9}  note")
    for row in rows:
        if row.get("params") is None:
            typer.echo(f"{clean(row['label']):<28} {row['n']:>4}  {clean(row['note'])}")
            continue
        typer.echo(f"{clean(row['label']):<28} {row['n']:>4} {row['params']:>7} {row['std']:>8.4f} "
                   f"{row['glorot_std']:>7.4f} {row['std_over_glorot']:>7.2f} {row['torch_default_std']:>7.4f} "
                   f"{row['mean']:>8.4f} {row['diag_mean']:>9.4f}  {clean(row['note'])}")
    if plot:
        chart = _plot(rows, "std", "effective std at initialisation vs N", x="n")
        if chart:
            typer.echo("\n" + chart)


def register(app: typer.Typer) -> None:
    """Add the ``study`` command group."""
    app.add_typer(study_app, name="study")
