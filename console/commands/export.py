"""``lowrank export RUN --format onnx|pt2``: the deployable network of a run as a file that computes
what the eager network computes (checked on the run's test images before it is kept); and
``lowrank export tensorboard RUN...``: TensorBoard event files from runs' metrics.jsonl."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

FORMATS_HELP = "onnx (ONNX, the dynamo exporter; needs the export extra), pt2 (torch.export), or tensorboard"


def register(app: typer.Typer) -> None:
    """Add the ``export`` command."""

    @app.command("export", no_args_is_help=True)
    def export(
        runs: Annotated[list[str], typer.Argument(metavar="RUN...", help="a run (id, tail, prefix, last, last~N); "
                                                                         "several, or 'all', for tensorboard")],
        fmt: Annotated[Optional[str], typer.Option("--format", "-f", help=FORMATS_HELP)] = None,
        out: Annotated[Optional[Path], typer.Option("--out", "-o", help="the file to write (default: "
                                                                        "RUN_DIR/export/model.onnx or .pt2)")] = None,
        inputs: Annotated[str, typer.Option(help="what the equality check runs on: data (the run's test images) or "
                                                 "random")] = "data",
        check_batch: Annotated[int, typer.Option(help="images in the equality check (1-4096)")] = 64,
        force: Annotated[bool, typer.Option("--force", help="replace an existing --out file")] = False,
        as_json: Annotated[bool, typer.Option("--json", help="print the export report as JSON")] = False,
    ) -> None:
        """Export a run's deployable network (best weights) to ONNX or pt2, checked against eager."""
        if fmt is None and runs and runs[0] == "tensorboard":  # `lowrank export tensorboard RUN...`
            fmt, runs = "tensorboard", runs[1:]
        fmt = fmt or "onnx"
        if fmt == "tensorboard":
            if not runs:
                from lowrank.errors import UserError

                raise UserError("name the runs to convert (or 'all')", key="RUN...")
            _tensorboard(runs)
            return
        _model(runs, fmt, out, inputs, check_batch, force, as_json)


def _model(runs: list[str], fmt: str, out: Path | None, inputs: str, check_batch: int, force: bool,
           as_json: bool) -> None:
    """Validate everything, then export and check; nothing is written before the check passes."""
    import os

    from lowrank.deploy.export import INPUT_KINDS, require_format
    from lowrank.errors import UserError

    require_format(fmt)
    if not 1 <= check_batch <= 4096:
        raise UserError(f"expected 1 to 4096 images, got {check_batch}", key="--check-batch")
    if inputs not in INPUT_KINDS:
        raise UserError(f"unknown --inputs {inputs!r}", key="--inputs", hint=f"one of: {', '.join(INPUT_KINDS)}")
    if len(runs) != 1:
        raise UserError(f"--format {fmt} exports one run, got {len(runs)}", key="RUN", hint="name a single run")
    from console.run_ids import resolve_in
    from console.runs import RunStore

    run = resolve_in(RunStore().root, runs[0])
    from lowrank.deploy.export import default_path

    target = Path(out).expanduser() if out is not None else default_path(run.path, fmt)
    if out is not None and target.exists() and not force:
        raise UserError("the output file exists", file=str(target), key="--out", hint="add --force to replace it")
    if target.is_dir():
        raise UserError("the output is a directory", file=str(target), key="--out", hint="give a file name")
    parent = target.parent if target.parent.exists() else next(p for p in target.parents if p.exists())
    if not os.access(parent, os.W_OK):
        raise UserError("cannot write there", file=str(parent), key="--out", hint="pick a writable directory")

    from lowrank.deploy.deployable import from_run
    from lowrank.deploy.export import check_images, export

    deployable = from_run(run.path, "cpu")
    images, described = check_images(deployable, inputs, check_batch)
    report = export(deployable.model, fmt, target, images, deployable.params, described)
    facts = {"run_id": run.run_id, "network": deployable.label, "weights": deployable.weights,
             "dense_params": _dense_params(run), **report.to_dict()}
    if as_json:
        from console.safe_text import dumps

        typer.echo(dumps(facts, indent=2))
    else:
        _print_report(facts)
    if not report.passed:
        raise typer.Exit(1)


def _dense_params(run) -> int | None:
    from lowrank.rundir import STATUS_FILE
    from lowrank.run_files import load_status

    return load_status(run.file(STATUS_FILE))[0].get("dense_params")


def _size(count: int) -> str:
    for scale, unit in ((1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")):
        if count >= scale:
            return f"{count / scale:.2f} {unit}"
    return f"{count} B"


def _print_report(facts: dict) -> None:
    from console.safe_text import clean

    stored = facts["stored"]
    dense = f"; dense {facts['dense_params']:,}" if facts.get("dense_params") else ""
    verdict = "passed" if facts["passed"] else "FAILED: the file was not kept"
    typer.echo(f"{'exported' if facts['passed'] else 'not exported'}: {clean(facts['run_id'])} "
               f"({clean(facts['network'])}, {clean(Path(facts['weights']).name)})"
               + (f" -> {clean(facts['path'])}" if facts["passed"] else ""))
    typer.echo(f"  format   {facts['format']}, {'dynamic batch' if facts['dynamic_batch'] else 'fixed batch'}, "
               f"{_size(facts['bytes'])}")
    typer.echo(f"  stores   {stored['float_values']:,} float values (the network's {facts['params']:,} parameters"
               f"{dense}) and {stored['other_values']:,} integer values; {stored['nodes']:,} graph nodes")
    typer.echo(f"  check    {clean(facts['check_inputs'])}: max |{facts['format']} - eager| = "
               f"{facts['max_abs_diff']:.2e} (relative {facts['relative_diff']:.2e}, tolerance "
               f"{facts['tolerance']:.0e}): {verdict}")
    for note in facts.get("notes") or []:
        typer.echo(f"  note     {clean(note)}")


def _tensorboard(runs: list[str]) -> None:
    """Write RUN_DIR/tensorboard/ for each run from its metrics; then tensorboard --logdir $LOWRANK_HOME/runs."""
    from lowrank.extras import require
    from lowrank.tensorboard import export_run

    require("tensorboard", "export tensorboard", "TensorBoard event files")  # before any run's folder exists

    from console.run_ids import resolve_in
    from console.runs import RunStore
    from console.safe_text import clean

    store = RunStore()
    targets = store.run_dirs() if runs == ["all"] else [resolve_in(store.root, text) for text in runs]
    for run in targets:
        written = export_run(run)
        typer.echo(f"{clean(run.run_id)}: {written} scalars -> {clean(run.file('tensorboard'))}")
    typer.echo(f"view them: tensorboard --logdir {clean(store.root)}")
