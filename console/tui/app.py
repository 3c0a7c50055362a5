"""Placeholder console app until the TUI issue lands: shows where runs live and quits on q."""

from __future__ import annotations

from textual.app import App, ComposeResult
from textual.widgets import Footer, Header, Static


class LowrankConsole(App):
    """A one-screen placeholder: the full console is its own issue."""

    BINDINGS = [("q", "quit", "Quit")]

    def compose(self) -> ComposeResult:
        from lowrank.rundir import lowrank_home

        yield Header()
        yield Static(f"lowrank console\n\nruns live in {lowrank_home()}\n\nUse `lowrank ls` meanwhile. Press q to quit.")
        yield Footer()


def run_app() -> None:
    """Run the console until the user quits."""
    LowrankConsole().run()
