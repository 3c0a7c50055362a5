"""``lowrank bench layers``: time every substitute method against the dense conv it replaces."""

from __future__ import annotations

import json
from typing import Annotated

import typer

bench_app = typer.Typer(help="Micro-benchmarks on the current device.", no_args_is_help=True)


def _ints(text: str, option: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise typer.BadParameter(f"expected comma-separated positive integers, got {text!r}", param_hint=option)
    return values


def _table(rows: list[dict], key: str, reference: str) -> list[str]:
    ratio = f"x {reference}"
    lines = [f"{key:<22} {'params':>10} {'fwd ms':>9} {'±iqr':>6} {ratio:>8} {'fwd+bwd ms':>11} {'±iqr':>6} {ratio:>8}"]
    for row in rows:
        if "error" in row:
            lines.append(f"{row['method']:<22} error: {row['error']}")
            continue
        lines.append(f"{row['method']:<22} {row['params']:>10,d} {row['fwd_ms']:>9.2f} {row['fwd_iqr_ms']:>6.2f} "
                     f"{row['fwd_ratio']:>8.2f} {row['fwdbwd_ms']:>11.2f} {row['fwdbwd_iqr_ms']:>6.2f} "
                     f"{row['fwdbwd_ratio']:>8.2f}")
    return lines


@bench_app.command()
def layers(
    as_json: Annotated[bool, typer.Option("--json", help="Print the rows as JSON.")] = False,
    device: Annotated[str, typer.Option(help="cpu or cuda.")] = "cpu",
    channels: Annotated[str, typer.Option(help="Comma-separated channel counts (in = out).")] = "64,256",
    batch: Annotated[str, typer.Option(help="Comma-separated batch sizes (the default run takes under a minute on a 2-core CPU).")] = "8,32",
    hw: Annotated[int, typer.Option(help="Input height = width.")] = 16,
    repeat: Annotated[int, typer.Option(help="Interleaved timed rounds per measurement (median and IQR).")] = 5,
    methods: Annotated[str, typer.Option(help="Comma-separated methods (default: all registered).")] = "",
    linear_n: Annotated[int, typer.Option(help="N for ACDC vs nn.Linear (0 skips it).")] = 4096,
    linear_batch: Annotated[int, typer.Option(help="Batch for ACDC vs nn.Linear.")] = 128,
) -> None:
    """Forward and forward+backward time of each method (k=3) as ratios to the dense conv."""
    from lowrank.errors import UserError

    chans, batches = _ints(channels, "--channels"), _ints(batch, "--batch")
    if device not in ("cpu", "cuda"):
        raise typer.BadParameter("expected cpu or cuda", param_hint="--device")
    import torch

    from lowrank.bench import bench_acdc_linear, bench_layers
    from lowrank.methods import get_method

    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is available here", hint="use --device cpu")
    names = [name.strip() for name in methods.split(",") if name.strip()] or None
    for name in names or []:
        try:
            get_method(name)
        except KeyError as error:
            raise typer.BadParameter(str(error.args[0]), param_hint="--methods") from None
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    passes = 2 * len(chans) * len(batches) + (2 if linear_n > 0 else 0)  # fwd and fwd+bwd per group
    # the bar goes to stderr (and only to a terminal), so --json and pipes get clean output
    with Progress(TextColumn("bench"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("bench", total=passes)
        tick = lambda _label: bar.advance(task)  # noqa: E731
        rows = bench_layers(chans, batches, device=device, hw=hw, repeat=repeat, methods=names, progress=tick)
        if linear_n > 0:
            rows += bench_acdc_linear(n=linear_n, batch=linear_batch, device=device, repeat=repeat, progress=tick)
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    threads = f", {torch.get_num_threads()} threads" if device == "cpu" else ""
    typer.echo(f"device: {device}{threads}; k=3 conv, stride 1, {hw}x{hw} input; median of {repeat} interleaved "
               f"rounds (torch.utils.benchmark), ±iqr = interquartile range")
    for ch in chans:
        for b in batches:
            group = [r for r in rows if r["kind"] == "conv" and r["channels"] == ch and r["batch"] == b]
            typer.echo(f"\nchannels {ch} -> {ch}, batch {b}")
            typer.echo("\n".join(_table(group, "method", "dense")))
    linear = [r for r in rows if r["kind"] == "linear"]
    if linear:
        typer.echo(f"\nACDC vs nn.Linear, N={linear_n}, batch {linear_batch} (ratios to nn.Linear)")
        typer.echo("\n".join(_table(linear, "layer", "linear")))


def register(app: typer.Typer) -> None:
    """Add the ``bench`` command group."""
    app.add_typer(bench_app, name="bench")
