"""``lowrank methods``: list the registered substitute methods and their declarations."""

from __future__ import annotations

import json
from typing import Annotated

import typer


def method_rows() -> list[dict]:
    """One plain dict per registered method: name, hyperparameter, options, description, paper."""
    from dataclasses import asdict

    from lowrank.catalogue import catalogue  # the declarations without importing torch (cached)

    rows = []
    for name, method in sorted(catalogue().methods.items()):
        rows.append({"name": name, "hp": None if method.hp is None else asdict(method.hp),
                     "options": dict(method.options), "description": method.description, "paper": method.paper})
    return rows


def _hp_text(hp: dict | None) -> str:
    if hp is None:
        return "-"
    arrow = "more params" if hp["direction"] > 0 else "fewer params"
    # not "default": a run never falls back to it (it must set substitute.hp or a budget);
    # it is the typical value `lowrank bench layers` measures at
    return (f"{hp['name']}:{hp['kind']} [{hp['low']:g}, {hp['high']:g}] e.g. {hp['example']:g} (up = {arrow}); "
            f"set substitute.hp or substitute.budget")


def register(app: typer.Typer) -> None:
    """Add the ``methods`` command."""

    @app.command()
    def methods(
        as_json: Annotated[bool, typer.Option("--json", help="Print the declarations as JSON.")] = False,
    ) -> None:
        """List substitute methods: hyperparameter, range, direction, options and description."""
        rows = method_rows()
        if as_json:
            typer.echo(json.dumps(rows, indent=2))
            return
        width = max(len(row["name"]) for row in rows)
        for row in rows:
            typer.echo(f"{row['name']:<{width}}  {row['description']}")
            typer.echo(f"{'':<{width}}  hp: {_hp_text(row['hp'])}")
            if row["options"]:
                options = ", ".join(f"{key}={value!r}" for key, value in row["options"].items())
                typer.echo(f"{'':<{width}}  options: {options}")
