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
from console.backends import register_reconcilers

register_reconcilers()  # ls, show, logs: a Slurm run's state as Slurm sees it

app = typer.Typer(
    name="lowrank",
    help="Train compressed CNNs at matched parameter budgets; launch, watch and compare runs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},  # inherited by every command
)


def _flags_without_type(option_class: type) -> None:
    """Typer >= 0.16 shows ``<bool>`` beside every flag (even ``--help``); a flag takes no value."""
    shown = getattr(option_class, "display_type_rich", None)
    if shown is None:
        return

    def display_type_rich(self, ctx):  # noqa: ANN001 -- typer's signature
        return None if getattr(self, "is_flag", False) else shown(self, ctx)

    option_class.display_type_rich = display_type_rich


_flags_without_type(getattr(typer.core, "TyperOption", object))


def _print_version(value: bool) -> None:
    if value:
        from lowrank import __version__

        typer.echo(f"lowrank {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", "-V", callback=_print_version, is_eager=True,
                                 help="print the version and exit"),
) -> None:
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
