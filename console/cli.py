"""The ``lowrank`` command: a thin Typer app whose commands live in ``console/commands/``.

Each module in ``console.commands`` defines ``register(app)``; adding a command is adding
a file. Commands import torch and the library lazily so ``lowrank ls`` starts fast.
User errors (:class:`lowrank.errors.UserError`) are printed as one message with exit
code 2, never as a traceback.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys

import typer

import console.commands as commands_pkg

app = typer.Typer(
    name="lowrank",
    help="Train compressed CNNs at matched parameter budgets; launch, watch and compare runs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

@app.callback()
def _root() -> None:
    """Train compressed CNNs at matched parameter budgets; launch, watch and compare runs."""


for _info in sorted(pkgutil.iter_modules(commands_pkg.__path__), key=lambda info: info.name):
    if not _info.name.startswith("_"):
        importlib.import_module(f"{commands_pkg.__name__}.{_info.name}").register(app)


def main() -> None:
    """Entry point: run the app, turning user errors into one clear message."""
    from lowrank.errors import UserError

    try:
        app()  # standalone: click prints usage errors itself and exits
    except UserError as error:
        from console.safe_text import clean_block

        typer.secho(f"error: {clean_block(error)}", fg="red", err=True)  # values from files: no escapes
        sys.exit(2)


if __name__ == "__main__":
    main()
