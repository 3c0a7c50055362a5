"""``lowrank bench layers`` (every substitute method against the dense conv it replaces) and
``lowrank bench model`` (a whole deployable network against the dense network of its preset)."""

from __future__ import annotations

import json
from typing import Annotated

import typer

bench_app = typer.Typer(help="Micro-benchmarks on the current device.", no_args_is_help=True)


def _ints(text: str, option: str) -> list[int]:
    """Comma-separated positive integers, or one UserError naming the option (exit 2, one line)."""
    from lowrank.errors import UserError

    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise UserError(f"expected comma-separated positive integers, got {text!r}", key=option)
    return values


def _at_least(value: int, low: int, option: str, high: int | None = None) -> int:
    """``value`` if low <= value (<= high), else one UserError naming the option."""
    from lowrank.errors import UserError

    if value < low or (high is not None and value > high):
        span = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise UserError(f"expected an integer {span}, got {value}", key=option)
    return value


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
        raise UserError(f"expected cpu or cuda, got {device!r}", key="--device")
    import torch

    from lowrank.deploy.layers import bench_acdc_linear, bench_layers
    from lowrank.methods import get_method

    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is available here", hint="use --device cpu")
    names = [name.strip() for name in methods.split(",") if name.strip()] or None
    for name in names or []:
        try:
            get_method(name)
        except KeyError as error:
            raise UserError(str(error.args[0]), key="--methods") from None
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


def resolve_source(text: str, overrides: list[str]) -> tuple[str, object]:
    """("preset", path) for an existing YAML file, else ("run", RunDir) for a run id; a run takes no
    --set (its config is what it trained with). Raises UserError naming what was looked for."""
    from pathlib import Path

    from lowrank.errors import UserError

    path = Path(text).expanduser()
    if path.is_file() or path.suffix in (".yaml", ".yml"):
        return "preset", path
    from console.run_ids import resolve_in
    from console.runs import RunStore

    run = resolve_in(RunStore().root, text)
    if overrides:
        raise UserError("--set changes a preset; a run's network is the one it trained", key="--set",
                        hint="bench the run's preset with --set instead, or drop --set")
    return "run", run


MODEL_DEFAULT_BATCH = "1,32"  # WRN-28-10 at 64 costs ~80 s on 2 cores (the default must stay under a minute)


@bench_app.command(no_args_is_help=True)
def model(
    source: Annotated[str, typer.Argument(metavar="PRESET|RUN", help="experiment YAML (initial weights) or a run "
                                                                    "(its trained weights; id, tail, last)")],
    set_: Annotated[list[str], typer.Option("--set", "-s", help="override KEY.PATH=VALUE (presets), repeatable")] = [],
    device: Annotated[str, typer.Option(help="cpu or cuda.")] = "cpu",
    threads: Annotated[str, typer.Option(help="Comma-separated intra-op thread counts; 'all' = every usable core.")]
    = "all",
    batch: Annotated[str, typer.Option(help="Comma-separated batch sizes.")] = MODEL_DEFAULT_BATCH,
    mode: Annotated[str, typer.Option(help="Comma-separated: eager, compile (torch.compile), onnx (ONNX Runtime; "
                                          "the export extra).")] = "eager",
    dtype: Annotated[str, typer.Option(help="float32, bfloat16 or float16 (the network and its inputs cast).")]
    = "float32",
    repeat: Annotated[int, typer.Option(help="Interleaved timed rounds, 1-1000 (median and IQR).")] = 7,
    depth: Annotated[int, typer.Option(help="Module depth of the where-the-time-goes table (as lowrank count).")]
    = 2,
    min_seconds: Annotated[float, typer.Option(help="Per (threads, batch): more rounds while they fit in this many "
                                                    "seconds (steadier medians for cheap settings).")] = 2.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print everything as JSON.")] = False,
    as_csv: Annotated[bool, typer.Option("--csv", help="Print the timing rows as CSV.")] = False,
) -> None:
    """Latency and throughput of the deployable network beside the dense network of the same preset."""
    from lowrank.deploy.latency import check_request, parse_threads
    from lowrank.errors import UserError

    batches = _ints(batch, "--batch")
    _at_least(repeat, 1, "--repeat", 1000)
    _at_least(depth, 1, "--depth")
    if not 0 <= min_seconds <= 3600:
        raise UserError(f"expected 0 to 3600 seconds, got {min_seconds}", key="--min-seconds")
    try:
        thread_counts = parse_threads(threads)
    except ValueError:
        raise UserError(f"expected comma-separated positive integers or 'all', got {threads!r}",
                        key="--threads") from None
    modes = list(dict.fromkeys(part.strip() for part in mode.split(",") if part.strip()))
    if not modes:
        raise UserError(f"expected eager, compile and/or onnx, got {mode!r}", key="--mode")
    if as_json and as_csv:
        raise UserError("--json and --csv both asked for", key="--csv", hint="pick one")
    check_request(device, modes, dtype)
    kind, where = resolve_source(source, set_)

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from lowrank.deploy.deployable import dense_reference, from_preset, from_run
    from lowrank.deploy.latency import bench_model

    # built before the bar: a bad preset, override or run is one clean line
    subject = from_preset(where, set_, device) if kind == "preset" else from_run(where.path, device)
    reference = dense_reference(subject)
    passes = len(thread_counts) * len(batches) + 1  # + the breakdown
    with Progress(TextColumn("bench model"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("bench", total=passes)
        result = bench_model(subject, reference, threads=thread_counts, batches=batches, modes=modes,
                             repeat=repeat, depth=depth, dtype=dtype, progress=lambda _label: bar.advance(task),
                             min_seconds=min_seconds)
    result["source"] = {"kind": kind, "name": str(where) if kind == "preset" else where.run_id}
    if as_json:
        from console.safe_text import dumps

        typer.echo(dumps(result, indent=2, default=str))
        return
    if as_csv:
        typer.echo(model_csv(result), nl=False)
        return
    typer.echo("\n".join(model_report(result)))


CSV_COLUMNS = ("source", "network", "device_name", "dtype", "threads", "batch", "mode", "ms", "iqr_ms", "per_image_ms",
               "throughput", "dense_ms", "dense_iqr_ms", "dense_per_image_ms", "dense_throughput", "ratio", "ratio_iqr",
               "params_ratio", "macs_ratio", "rounds", "torch")


def model_csv(result: dict) -> str:
    """The timing rows of a ``bench model`` result as CSV (one row per threads, batch, mode)."""
    import csv
    import io

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    env = result["environment"]
    for row in result["rows"]:
        writer.writerow({**row, "source": result["source"]["name"], "network": result["subject"]["label"],
                         "device_name": env["device_name"], "dtype": env["dtype"], "torch": env["torch"],
                         **result["declared"]})
    return buffer.getvalue()


def _ms(value) -> str:
    return "-" if value is None else (f"{value:.3f}" if value < 10 else f"{value:.1f}")


def model_report(result: dict) -> list[str]:
    """The human-readable report: declared ratios, measured ratios per row, the depth table."""
    from console.safe_text import clean

    env, subject, dense, declared = result["environment"], result["subject"], result["reference"], result["declared"]
    name = clean(subject["label"])
    lines = [f"{clean(result['source']['name'])}: {clean(subject['model'])} with {name} ({clean(subject['weights'])}) "
             f"vs dense",
             f"device: {clean(env['device_name'])}, {env['dtype']}, torch {env['torch']}"
             + (f", onnxruntime {env['onnxruntime']}" if env.get("onnxruntime") else "")
             + f"; median of >= {env['repeat']} interleaved rounds, ±iqr",
             f"declared: params {subject['params']:,} vs {dense['params']:,} (x{declared['params_ratio']:.3f} dense), "
             f"mult-adds/image {subject['macs']:,} vs {dense['macs']:,} (x{declared['macs_ratio']:.3f} dense)", ""]
    header = (f"{'threads':>7} {'batch':>5} {'mode':<7} {'dense ms/img':>12} {name + ' ms/img':>16} "
              f"{'time x dense':>14} {'img/s':>9} {'macs x':>7} {'params x':>8}")
    lines.append(header)
    for row in result["rows"]:
        ratio = f"{row['ratio']:.3f}±{row['ratio_iqr']:.3f}"
        flag = "  slower" if row["ratio"] > 1.0 else ""
        lines.append(f"{row['threads']:>7} {row['batch']:>5} {row['mode']:<7} {_ms(row['dense_per_image_ms']):>12} "
                     f"{_ms(row['per_image_ms']):>16} {ratio:>14} {row['throughput'] or 0:>9.0f} "
                     f"{declared['macs_ratio']:>7.3f} {declared['params_ratio']:>8.3f}{flag}")
    fewer_but_slower = [row for row in result["rows"] if row["ratio"] > 1.0 and (declared["macs_ratio"] or 1) < 1.0]
    if fewer_but_slower:
        lines.append(f"fewer mult-adds, slower: {len(fewer_but_slower)} of {len(result['rows'])} settings "
                     f"(x{declared['macs_ratio']:.3f} the mult-adds, up to x{max(r['ratio'] for r in fewer_but_slower):.2f} "
                     f"the time)")
    table = result["breakdown"]
    lines += ["", f"where the time goes (eager, batch {table['batch']}, {table['threads']} threads, module depth "
                  f"{table['depth']}; forward hooks, ms per forward)",
              f"{'module':<28} {'params x':>9} {'macs x':>8} {'dense ms':>9} {name + ' ms':>14} {'time x':>7}"]
    for row in table["rows"]:
        params = f"{row['params'] / row['dense_params']:.3f}" if row["dense_params"] else "-"
        macs = f"{row['macs'] / row['dense_macs']:.3f}" if row["dense_macs"] else "-"
        time_ratio = (f"{row['ms'] / row['dense_ms']:.2f}" if row.get("ms") is not None and row.get("dense_ms")
                      else "-")
        mark = "  <- fewer mult-adds, slower" if (row["dense_macs"] and row["macs"] < row["dense_macs"]
                                                   and row.get("ms") and row.get("dense_ms")
                                                   and row["ms"] > row["dense_ms"]) else ""
        lines.append(f"{clean(row['name']):<28} {params:>9} {macs:>8} {_ms(row.get('dense_ms')):>9} "
                     f"{_ms(row.get('ms')):>14} {time_ratio:>7}{mark}")
    lines.append(f"{'total':<28} {'':>9} {'':>8} {_ms(table['dense_total_ms']):>9} {_ms(table['total_ms']):>14} "
                 f"{table['total_ms'] / table['dense_total_ms']:>7.2f}")
    return lines


def register(app: typer.Typer) -> None:
    """Add the ``bench`` command group."""
    app.add_typer(bench_app, name="bench")
