"""``lowrank gpus``: each GPU (memory, utilisation, temperature, power, our runs on it) and host load."""

from __future__ import annotations

import json
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    """Add the ``gpus`` command."""

    @app.command()
    def gpus(as_json: Annotated[bool, typer.Option("--json", help="print the snapshot as JSON")] = False) -> None:
        """Show GPUs and host load; says so clearly when there is no GPU or no driver."""
        from console.gpus import snapshot

        snap = snapshot(cpu_interval=0.2)
        if as_json:
            typer.echo(json.dumps(snap.to_dict(), indent=2))
            return
        _print(snap)


def _print(snap) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False, soft_wrap=True)
    host = snap.host
    console.print(f"[bold]{host.hostname}[/]  CPU {host.cpu_percent:.0f}% of {host.cpu_count} cores  "
                  f"load {host.load_avg[0]:.2f} {host.load_avg[1]:.2f} {host.load_avg[2]:.2f}  "
                  f"memory {host.memory_used_mb / 1024:.1f}/{host.memory_total_mb / 1024:.1f} GiB")
    if not snap.gpus:
        console.print(f"[yellow]no GPU[/]: {snap.nvml_error or 'none found'}; runs use the CPU")
        return
    if not console.is_terminal:
        console = Console(highlight=False, soft_wrap=True, width=200)
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("gpu", "name", "memory", "util", "temp", "power", "processes"):
        table.add_column(column)

    def num(value, fmt: str) -> str:
        return "-" if value is None else format(value, fmt)

    for gpu in snap.gpus:
        procs = ", ".join(f"{proc.run_id or proc.name or '?'}[{proc.pid}]"
                          + (f" {proc.used_memory_mb:.0f}M" if proc.used_memory_mb is not None else "")
                          for proc in gpu.processes) or "idle"
        power = "-" if gpu.power_w is None else f"{gpu.power_w:.0f}/{num(gpu.power_limit_w, '.0f')} W"
        table.add_row(str(gpu.index), gpu.name,
                      f"{gpu.memory_used_mb / 1024:.1f}/{gpu.memory_total_mb / 1024:.1f} GiB",
                      num(gpu.utilization_pct, ".0f") + "%", num(gpu.temperature_c, ".0f") + "C", power, procs)
    console.print(table)
    console.print(f"driver {snap.driver_version}")
