"""``lowrank count PRESET``: parameters and mult-adds of the network a preset builds.

Builds the model on the ``meta`` device (no memory, no data), applies the substitution
with the budget solved, and reports it beside the dense reference.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    """Add the ``count`` command."""

    @app.command(no_args_is_help=True)
    def count(
        preset: Annotated[Path, typer.Argument(help="experiment YAML")],
        set_: Annotated[list[str], typer.Option("--set", "-s", help="override KEY.PATH=VALUE, repeatable")] = [],
        as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of tables")] = False,
    ) -> None:
        """Count parameters and mult-adds after substitution and budget solving."""
        result = count_preset(preset, set_)
        if as_json:
            typer.echo(json.dumps({k: v for k, v in result.items() if k != "layers"} | {"layers": result["layers"]},
                                  indent=2, default=str))
            return
        _print(result)


def count_preset(preset: Path, overrides: list[str]) -> dict:
    """The counts of the network ``preset`` builds, as a JSON-able dict."""
    import torch

    from lowrank.build import build_network
    from lowrank.config import load
    from lowrank.data import dataset_shape

    config = load(preset, overrides)
    num_classes, input_shape = dataset_shape(config.data)
    with torch.device("meta"):
        net = build_network(config, num_classes, input_shape, device="meta")
    return {"preset": str(preset), "model": config.model.name, "input_shape": list(input_shape),
            "num_classes": num_classes, **net.summary(),
            "budget_fraction": config.substitute.budget, "layers": net.layers}


def _print(result: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title=f"{result['model']} with {result['method']} ({result['preset']})", show_lines=False)
    for column in ("layer", "type", "params", "mult-adds"):
        table.add_column(column, justify="right" if column != "layer" and column != "type" else "left")
    for row in result["layers"]:
        table.add_row(str(row.get("name")), str(row.get("type")), f"{row.get('params', 0):,}", f"{row.get('macs', 0):,}")
    console.print(table)
    ratio = result["params"] / result["dense_params"]
    console.print(f"parameters  {result['params']:,}  ({ratio:.4f} of dense {result['dense_params']:,})")
    console.print(f"mult-adds   {result['macs']:,}  ({result['macs'] / result['dense_macs']:.4f} of dense "
                  f"{result['dense_macs']:,})")
    if result.get("hp") is not None:
        console.print(f"hp          {result['hp']:.6g}")
    if result.get("budget_target") is not None:
        console.print(f"budget      target {result['budget_target']:,}, gap {100 * result['budget_gap']:+.3f}%")
