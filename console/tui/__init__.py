"""lowrank-console: the interactive terminal console (Textual)."""


def main() -> None:
    """Entry point of ``lowrank-console``."""
    from .app import run_app

    run_app()
