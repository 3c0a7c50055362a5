"""``lowrank diff RUN_A RUN_B``: the resolved config keys whose values differ, and the code."""

from __future__ import annotations

from typing import Annotated, Any

import typer

MISSING = "(absent)"


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """``{"train": {"lr": 0.1}}`` -> ``{"train.lr": 0.1}``; lists are values (compared whole)."""
    if not isinstance(data, dict):
        return {prefix: data} if prefix else {}
    out: dict[str, Any] = {}
    for key, value in data.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict) and value:
            out.update(flatten(value, path))
        else:
            out[path] = value
    return out


def config_diff(a: dict[str, Any], b: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """(key, value in a, value in b) for every leaf key that differs, in a's order then b's."""
    flat_a, flat_b = flatten(a), flatten(b)
    keys = list(flat_a) + [key for key in flat_b if key not in flat_a]
    return [(key, flat_a.get(key, MISSING), flat_b.get(key, MISSING)) for key in keys
            if flat_a.get(key, MISSING) != flat_b.get(key, MISSING)]


def code_diff(a: dict[str, Any], b: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """The provenance fields (commits, dirty flags, versions, GPUs) that differ."""
    wanted = ("lowrank.version", "lowrank.commit", "lowrank.dirty", "repo.root", "repo.commit", "repo.dirty",
              "python", "torch", "cuda", "cudnn", "gpu_names", "worker_host")
    flat_a = flatten(a if isinstance(a, dict) else {})
    flat_b = flatten(b if isinstance(b, dict) else {})
    return [(key, flat_a.get(key, MISSING), flat_b.get(key, MISSING)) for key in wanted
            if flat_a.get(key, MISSING) != flat_b.get(key, MISSING)]


def _show(value: Any) -> str:
    import json

    from console.safe_text import clean

    return MISSING if value is MISSING else clean(json.dumps(value, default=str))


def register(app: typer.Typer) -> None:
    """Add the ``diff`` command."""

    @app.command(no_args_is_help=True)
    def diff(
        run_a: Annotated[str, typer.Argument(help="run id, a unique prefix or tail, last or last~N")],
        run_b: Annotated[str, typer.Argument(help="the run to compare it with")],
        as_json: Annotated[bool, typer.Option("--json", help="a JSON object {config: [...], code: [...]}")] = False,
    ) -> None:
        """Print the config keys that differ between two runs, then the code (commits, versions); exit 1 if any."""
        from console.runs import RunStore, read_config
        from console.run_ids import resolve_in
        from console.safe_text import clean, dumps

        store = RunStore()
        first, second = resolve_in(store.root, run_a), resolve_in(store.root, run_b)
        config = config_diff(_config(read_config(first)), _config(read_config(second)))
        code = code_diff(first.read_status().get("provenance"), second.read_status().get("provenance"))
        if as_json:
            rows = lambda items: [{"key": k, "a": None if x is MISSING else x, "b": None if y is MISSING else y}
                                  for k, x, y in items]  # noqa: E731
            typer.echo(dumps({"a": first.run_id, "b": second.run_id, "config": rows(config), "code": rows(code)},
                             indent=2))
        else:
            typer.echo(f"a: {clean(first.run_id)}\nb: {clean(second.run_id)}")
            if not config and not code:
                typer.echo("same config and code")
            for title, items in (("config", config), ("code", code)):
                if not items:
                    continue
                width = max(len(key) for key, _, _ in items) + 2
                typer.echo(f"\n{title} ({len(items)} differ):")
                for key, x, y in items:
                    typer.echo(f"  {clean(key):<{width}}{_show(x)}  ->  {_show(y)}")
        if config or code:
            raise typer.Exit(1)


def _config(data: dict[str, Any]) -> dict[str, Any]:
    """The config as compared: ``name`` and ``description`` are labels, not what ran."""
    from lowrank.run_files import UNREADABLE_KEY

    return {key: value for key, value in data.items() if key not in ("name", "description", UNREADABLE_KEY)}
