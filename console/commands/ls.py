"""``lowrank ls``: every run with its state and progress (a table, or JSON)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from lowrank.run_files import UNREADABLE

STATE_STYLE = {"running": "cyan", "queued": "blue", "finished": "green", "failed": "red", "killed": "yellow", "pruned": "dark_orange",
               UNREADABLE: "magenta"}


DEFAULT_ROWS = 20  # the table shows the most recent runs; --all or -n N for more


def duration(seconds: float | None) -> str:
    """``3h07m``, ``12m05s``, ``42s`` (``-`` when unknown)."""
    if seconds is None:
        return "-"
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def register(app: typer.Typer) -> None:
    """Add the ``ls`` command."""

    @app.command("ls")
    def ls(
        state: Annotated[Optional[list[str]], typer.Option("--state", help="only runs in this state (repeatable)")] = None,
        as_json: Annotated[bool, typer.Option("--json", help="print a JSON list")] = False,
        last: Annotated[Optional[int], typer.Option("--last", "-n", help=f"only the N most recent runs (the table "
                                                                     f"shows {DEFAULT_ROWS} unless --all)")] = None,
        show_all: Annotated[bool, typer.Option("--all", "-a", help="every run (the JSON lists every run anyway)")] = False,
    ) -> None:
        """List runs: model, method, budget, state, GPUs, epoch, loss, best error, elapsed, ETA."""
        from lowrank.errors import UserError
        from lowrank.rundir import STATES

        from console.runs import RunStore

        bad = sorted(set(state or ()) - set(STATES))
        if bad:
            raise UserError(f"unknown state {bad[0]!r}", key="--state", hint=f"states: {', '.join(STATES)}")
        store = RunStore()
        _repair(store)
        infos = store.list(state or None)
        _revive_queue(store, infos)
        total = len(infos)
        if last:
            infos = infos[-last:]
        elif not as_json and not show_all:
            infos = infos[-DEFAULT_ROWS:]
        if as_json:
            from console.safe_text import dumps

            typer.echo(dumps([info.to_dict() for info in infos], indent=2))  # valid JSON: NaN/inf -> null
            return
        if not infos:
            from console.safe_text import clean

            typer.echo("no runs yet" + (f" in state {', '.join(state)}" if state else "")
                       + f" in {clean(store.root)} (LOWRANK_HOME={clean(store.home)}; start one: lowrank run PRESET)")
            return
        _table(infos)
        if len(infos) < total:
            typer.echo(f"{len(infos)} most recent of {total} runs (lowrank ls --all for every run, -n N for N)", err=True)


def _revive_queue(store, infos) -> None:
    """Queued runs with no scheduler to start them (it was killed, or the machine rebooted):
    start one, and say so on stderr (the JSON on stdout stays clean)."""
    if not any(info.state == "queued" for info in infos):
        return
    from console.scheduler import revive

    message = revive(store)
    if message:
        typer.echo(message, err=True)


def _repair(store) -> None:
    """Write the results.csv rows owed by finished runs whose worker died before appending them."""
    from lowrank.results import owes_row, repair_results

    owing = [(run, status) for run, status in store.statuses(check=False) if owes_row(status)]
    if owing:
        repair_results(owing, store.home)


def _number(value, spec: str, suffix: str = "") -> str:
    """``value`` formatted, or ``-`` when it is missing or not a finite number."""
    from lowrank.run_files import number

    value = number(value)
    return "-" if value is None else f"{value:{spec}}{suffix}"


def _table(infos) -> None:
    from rich.console import Console
    from rich.table import Table

    from console.safe_text import markup

    table = Table(box=None, header_style="bold", pad_edge=False)
    for column, justify in (("run", "left"), ("model", "left"), ("method", "left"), ("budget", "right"),
                            ("params", "right"), ("state", "left"), ("gpus", "left"), ("epoch", "right"),
                            ("loss", "right"), ("best err", "right"), ("elapsed", "right"), ("eta", "right")):
        table.add_column(column, justify=justify, no_wrap=True, min_width=len(column))
    for info in infos:
        # every cell from a file is markup-escaped and stripped of control characters
        style = STATE_STYLE.get(info.state, "")
        gpus = "cpu" if info.gpus == [] else ",".join(map(str, info.gpus)) if info.gpus else "-"
        state = markup(info.state_shown)  # a Slurm run: queued/PENDING, failed/TIMEOUT, ...
        table.add_row(
            markup(info.run_id), markup(info.model or "-"), markup(info.method or "-"),
            _number(info.budget, "g"), _number(info.params, ",.0f"),
            f"[{style}]{state}[/]" if style else state, markup(gpus),
            f"{markup(info.epoch or 0)}/{markup(info.epochs or '?')}",
            _number(info.last_loss, ".4f"), _number(info.best_err1, ".2f", "%"),
            duration(info.elapsed_s), duration(info.eta_s))
    console = Console()
    if not console.is_terminal:  # piped or captured: do not squeeze the table into 80 columns
        console = Console(width=240)
    console.print(table)
    for info in [info for info in infos if info.state == "queued"][:5]:  # the queue explains itself
        why = info.waiting or _backend_waiting(info) or "waiting for the scheduler's next round"
        Console(stderr=True, soft_wrap=True).print(f"[blue]{markup(info.run_id)}[/]: {markup(why, 300)}",
                                                   highlight=False)
    failed = [info for info in infos if info.state == "failed" and info.error]
    for info in failed[-3:]:
        Console(stderr=True, soft_wrap=True).print(f"[red]{markup(info.run_id)}[/]: {markup(info.error, 500)}",
                                                   highlight=False)
    unreadable = [info for info in infos if info.state == UNREADABLE]
    for info in unreadable[-5:]:  # never hidden: say why each cannot be read
        Console(stderr=True, soft_wrap=True).print(f"[magenta]{markup(info.run_id)}[/]: {markup(info.error, 500)}",
                                                   highlight=False)


def _backend_waiting(info) -> str | None:
    """Why a queued run of another backend (Slurm) waits, as that backend says; this host's queue is not it."""
    from console import backends

    if info.backend in (None, backends.DEFAULT) or info.backend not in backends.REGISTRY:
        return None
    return backends.get(info.backend).waiting(info.to_dict())
