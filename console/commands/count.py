"""``lowrank count PRESET``: parameters and mult-adds of the network a preset builds.

Builds the model on the ``meta`` device (no memory, no data), applies the substitution
with the budget solved, and reports it beside the dense reference. The table is a summary by
module depth (``--depth N``, default 2, like torchinfo's ``depth``); ``--layers`` prints every
counted layer; ``--json`` always has everything. Counts are of the deployable network; the
model's training-only modules (an auxiliary head) are shown beside it. ``--train`` adds what a
training forward executes per image at the preset's batch size (training-only heads run; a
per-forward matrix build or factor reconstruction is divided by the batch size).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

DEFAULT_DEPTH = 2


def register(app: typer.Typer) -> None:
    """Add the ``count`` command."""

    @app.command(no_args_is_help=True)
    def count(
        preset: Annotated[Path, typer.Argument(help="experiment YAML")],
        set_: Annotated[list[str], typer.Option("--set", "-s", help="override KEY.PATH=VALUE, repeatable")] = [],
        as_json: Annotated[bool, typer.Option("--json", help="print JSON (every layer) instead of tables")] = False,
        depth: Annotated[int, typer.Option("--depth", min=1,
                                           help="summarise the table by module depth N (cells.3 is depth 2)")]
        = DEFAULT_DEPTH,
        layers: Annotated[bool, typer.Option("--layers", help="print every counted layer")] = False,
        train: Annotated[bool, typer.Option("--train", help="also count a training forward per image "
                                                            "(at data.batch_size)")] = False,
    ) -> None:
        """Count parameters and mult-adds after substitution and budget solving."""
        from console.safe_text import dumps

        result = count_preset(preset, set_, train=train)
        if as_json:
            typer.echo(dumps({k: v for k, v in result.items() if k not in ("layers", "module_types")}
                             | {"layers": result["layers"]},
                             indent=2, default=str))
            return
        _print(result, None if layers else depth)


def count_preset(preset: Path, overrides: list[str], train: bool = False) -> dict:
    """The counts of the network ``preset`` builds, as a JSON-able dict (``train``: with the
    training-forward counts under ``"train"`` and each layer's ``train_macs``)."""
    import torch

    from lowrank.build import build_network
    from lowrank.config import load
    from lowrank.count import count_training
    from lowrank.data import dataset_shape

    config = load(preset, overrides)
    num_classes, input_shape = dataset_shape(config.data)
    with torch.device("meta"):
        net = build_network(config, num_classes, input_shape, device="meta")
    types = {name or "(root)": type(module).__name__ for name, module in net.model.named_modules()}
    result = {"preset": str(preset), "model": config.model.name, "input_shape": list(input_shape),
              "num_classes": num_classes, **net.summary(),
              "budget_fraction": config.substitute.budget, "layers": net.layers, "module_types": types}
    if train:
        batch = config.data.batch_size
        counted = count_training(net.model, input_shape, batch)
        by_name = {row.name: row.macs for row in counted.layers}
        for row in result["layers"]:
            row["train_macs"] = by_name.get(row["name"], 0)
        only = {entry["module"]: entry["label"] for entry in net.training_only}
        result["train"] = {
            "batch_size": batch, "macs": counted.macs,
            "training_only_macs": [{"module": name, "label": label,
                                    "macs": sum(r.macs for r in counted.layers
                                                if r.name == name or r.name.startswith(name + "."))}
                                   for name, label in only.items()],
        }
    return result


def summarize(rows: list[dict[str, Any]], depth: int | None, types: dict[str, str]) -> list[dict[str, Any]]:
    """The table's rows: every layer (``depth`` None), or layers grouped by the first ``depth``
    parts of their names, params and mult-adds summed, in order of first appearance."""
    if depth is None:
        return rows
    groups: dict[str, dict[str, Any]] = {}
    for row in rows:
        name = str(row.get("name"))
        key = ".".join(name.split(".")[:depth])
        group = groups.setdefault(key, {"name": key, "type": types.get(key, row.get("type")), "params": 0,
                                        "macs": 0, "train_macs": 0, "layers": 0,
                                        "training_only": row.get("training_only", False)})
        group["params"] += row.get("params", 0)
        group["macs"] += row.get("macs", 0)
        group["train_macs"] += row.get("train_macs", 0)
        group["layers"] += 1
        group["training_only"] = group["training_only"] and row.get("training_only", False)
    return list(groups.values())


def params_line(result: dict) -> str:
    """``3,349,342 (+476,426 auxiliary head, training only)``: the deployable count and the rest."""
    text = f"{result['params']:,}"
    for entry in result.get("training_only") or []:
        text += f" (+{entry['params']:,} {entry['label']}, training only)"
    return text


def _print(result: dict, depth: int | None) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console()
    train = result.get("train")
    shown = summarize(result["layers"], depth, result.get("module_types", {}))
    title = f"{result['model']} with {result['method']} ({result['preset']})"
    title += f", by module depth {depth}" if depth is not None else ""
    table = Table(title=escape(title), show_lines=False)
    columns = ["layer", "type", "params", "mult-adds"] + (["train mult-adds"] if train else [])
    for column in columns:
        table.add_column(column, justify="left" if column in ("layer", "type") else "right")
    for row in shown:
        name = str(row.get("name")) + ("  [training only]" if row.get("training_only") else "")
        kind = str(row.get("type")) + (f" ({row['layers']} layers)" if row.get("layers", 1) > 1 else "")
        cells = [escape(name), escape(kind), f"{row.get('params', 0):,}", f"{row.get('macs', 0):,}"]
        if train:
            cells.append(f"{row.get('train_macs', 0):,}")
        table.add_row(*cells)
    console.print(table)
    ratio = result["params"] / result["dense_params"]
    console.print(f"parameters  {params_line(result)}  ({ratio:.4f} of dense {result['dense_params']:,})")
    console.print(f"mult-adds   {result['macs']:,}  ({result['macs'] / result['dense_macs']:.4f} of dense "
                  f"{result['dense_macs']:,}; eval, per image)")
    if train:
        extra = "".join(f", incl. {e['macs']:,} {e['label']}" for e in train["training_only_macs"])
        console.print(f"training    {train['macs']:,} mult-adds per image (one forward at batch {train['batch_size']}, "
                      f"any per-forward matrix build spread over its {train['batch_size']} images{extra})")
    if result.get("hp") is not None:
        console.print(f"hp          {result['hp']:.6g}")
    if result.get("budget_target") is not None:
        console.print(f"budget      target {result['budget_target']:,}, gap {100 * result['budget_gap']:+.3f}%")
