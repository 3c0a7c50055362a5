"""``lowrank show RUN``: one run in full -- state, numbers, provenance, config file."""

from __future__ import annotations

from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    """Add the ``show`` command."""

    @app.command(no_args_is_help=True)
    def show(
        run: Annotated[str, typer.Argument(help="run id, a unique prefix or tail (a006), last or last~N")],
        as_json: Annotated[bool, typer.Option("--json", help="status.json and config as one JSON object")] = False,
        config: Annotated[bool, typer.Option("--config", help="also print the resolved config")] = False,
    ) -> None:
        """Show a run: state, error, parameters, errors, and what code ran it (git commit, versions, command)."""
        import yaml

        from console.runs import RunStore, read_config, reconcile, run_info
        from console.run_ids import resolve_in
        from console.safe_text import clean_block, dumps

        store = RunStore()
        target = resolve_in(store.root, run)
        status = reconcile(target)
        cfg = read_config(target)
        if as_json:
            typer.echo(dumps({"status": status, "config": cfg}, indent=2))
            return
        typer.echo(show_text(run_info(target, status, cfg), status))
        if config:
            typer.echo("")
            typer.echo(clean_block(yaml.safe_dump(cfg, sort_keys=False)).rstrip())


def show_text(info, status: dict) -> str:
    """The plain-text page ``lowrank show`` prints (values sanitized: no escapes)."""
    from lowrank.provenance import provenance_lines

    from console.commands.ls import duration
    from console.ranks_text import ranks_line
    from console.safe_text import clean, clean_block

    def pct(value) -> str:
        return f"{value:.2f}%" if isinstance(value, (int, float)) and not isinstance(value, bool) else "-"

    def count(value) -> str:
        return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else "-"

    rows = [("run", info.run_id), ("name", info.name), ("state", info.state)]
    if info.error:
        rows.append(("error", clean_block(info.error)))
    rows += [("model", info.model or "-"), ("data", info.dataset or "-"), ("method", info.method or "-"),
             ("budget", "-" if info.budget is None else f"{info.budget:g}"),
             ("epoch", f"{info.epoch if info.epoch is not None else '-'}/{info.epochs or '-'}"),
             ("params", f"{count(status.get('params'))} (dense {count(status.get('dense_params'))})"),
             ("mult-adds", count(status.get("macs"))),
             ("error top-1", f"best val {pct(info.best_err1)}  test {pct(status.get('test_err1'))}"),
             ("elapsed", duration(info.elapsed_s))]
    for key in ("preset", "created", "started", "ended", "device", "gpus", "hp", "sweep", "relaunched_from",
                "backend", "slurm_job_id", "slurm_state", "slurm_node"):
        if status.get(key) not in (None, "", []):
            rows.append((key.replace("_", " "), str(status[key])))
    ranks = ranks_line(status)
    if ranks:
        rows.append(("ranks", ranks))
    provenance = provenance_lines(status.get("provenance"))
    rows += provenance or [("provenance", "not recorded (run created before provenance was kept)")]
    rows.append(("dir", info.path))
    width = max(len(label) for label, _ in rows) + 2
    return "\n".join(f"{label:<{width}}{value if label == 'error' else clean(value)}" for label, value in rows)
