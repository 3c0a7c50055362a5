"""``lowrank version``: print the installed version."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add the ``version`` command."""

    @app.command()
    def version() -> None:
        """Print the lowrank version."""
        from lowrank import __version__

        typer.echo(__version__)
