"""The GPU/host panel: one line per GPU (memory bar, utilisation, temperature, our runs on it)
and one line for the host (CPU, load, memory). "No GPU" is a normal state, said plainly."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.widgets import Static

BAR = 20


def bar(used: float, total: float, width: int = BAR) -> Text:
    """``[#########-----------]``-style bar coloured by fill (green / yellow / red)."""
    frac = 0.0 if total <= 0 else min(1.0, max(0.0, used / total))
    filled = round(frac * width)
    colour = "green" if frac < 0.6 else "yellow" if frac < 0.9 else "red"
    return Text.assemble(("█" * filled, colour), ("░" * (width - filled), "grey39"))


def render_snapshot(snapshot: Any, gpu_runs: dict[int, list[str]]) -> Text:
    """The panel's text for a :class:`console.gpus.HostSnapshot`."""
    out = Text()
    host = snapshot.host
    out.append(f"{host.hostname}", style="bold")
    out.append(f"  cpu {host.cpu_percent:5.1f}% of {host.cpu_count}  ")
    out.append_text(bar(host.cpu_percent, 100.0, 10))
    out.append(f"  load {host.load_avg[0]:.2f}  mem {host.memory_used_mb / 1024:.1f}/"
               f"{host.memory_total_mb / 1024:.1f} GiB  ")
    out.append_text(bar(host.memory_used_mb, host.memory_total_mb, 10))
    if not snapshot.gpus:
        out.append("\nno GPU", style="bold yellow")
        out.append(f": {snapshot.nvml_error or 'NVML reports none'}  (runs use the CPU)", style="dim")
        return out
    for gpu in snapshot.gpus:
        out.append(f"\nGPU{gpu.index} ", style="bold")
        out.append(f"{gpu.name[:22]:<22} ")
        out.append_text(bar(gpu.memory_used_mb, gpu.memory_total_mb))
        out.append(f" {gpu.memory_used_mb / 1024:5.1f}/{gpu.memory_total_mb / 1024:.0f} GiB")
        util = "-" if gpu.utilization_pct is None else f"{gpu.utilization_pct:3.0f}%"
        temp = "-" if gpu.temperature_c is None else f"{gpu.temperature_c:.0f}°C"
        out.append(f"  util {util:>4}  {temp:>5}  ")
        names = gpu_runs.get(gpu.index) or []
        others = len([proc for proc in gpu.processes if not proc.run_id]) if not names else 0
        if names:
            out.append(", ".join(names), style="green")
        elif gpu.processes:
            out.append(f"{others} other process(es)", style="dim")
        else:
            out.append("idle", style="dim")
    return out


class GpuPanel(Static):
    """Host and GPU load; fed by the app's snapshot worker through :meth:`show`."""

    DEFAULT_CSS = """
    GpuPanel {
        height: auto;
        max-height: 10;
        padding: 0 1;
        border: round $primary-darken-2;
        border-title-color: $text-muted;
    }
    """

    text = ""  # plain text of what is shown (tests)

    def on_mount(self) -> None:
        self.border_title = "host"
        self.update(Text("reading host and GPUs...", style="dim"))

    def show(self, snapshot: Any, gpu_runs: dict[int, list[str]]) -> None:
        """Redraw from a new snapshot."""
        self.border_title = f"host · {len(snapshot.gpus)} GPU(s)" if snapshot.gpus else "host · no GPU"
        rendered = render_snapshot(snapshot, gpu_runs)
        self.text = rendered.plain
        self.update(rendered)
