"""``lowrank run PRESET``: create a run directory and train it.

``--nproc N`` trains data-parallel: the worker runs under torchrun with N ranks (one per GPU,
or N gloo processes with ``--cpu``); ``data.batch_size`` stays the global batch.

Several machines: ``--nodes N`` with ``--backend slurm`` is one Slurm job on N nodes (``--nproc``
ranks on each); without Slurm, ``--nnodes N --node-rank R --master HOST:PORT`` on every machine
(torchrun's static rendezvous; :mod:`console.backends.nodes`): node 0 creates and writes the
run, node R > 0 joins it and writes only its own log.

In the foreground the worker runs in its own process group while this command draws a
progress bar from the run directory (the worker never talks to the console); Ctrl-C
stops the worker cleanly (state ``killed``). With ``--detach`` the run is queued for
the scheduler and the command prints its id and returns.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Optional

import typer

POLL_SECONDS = 0.25


def register(app: typer.Typer) -> None:
    """Add the ``run`` command."""

    @app.command(no_args_is_help=True)
    def run(
        preset: Annotated[Optional[Path], typer.Argument(help="experiment YAML, e.g. presets/quickstart.yaml")] = None,
        set_: Annotated[list[str], typer.Option("--set", "-s", help="override KEY.PATH=VALUE (YAML-typed), repeatable")] = [],
        resume: Annotated[Optional[str], typer.Option(help="continue run RUN (id or unique prefix) from its checkpoint")] = None,
        detach: Annotated[bool, typer.Option(help="queue the run for the scheduler and return its id")] = False,
        gpus: Annotated[Optional[int], typer.Option(help="number of GPUs the run needs (with --detach)")] = None,
        gpu: Annotated[Optional[list[int]], typer.Option(help="run on this GPU index (repeatable)")] = None,
        cpu: Annotated[bool, typer.Option(help="run on the CPU (no GPU)")] = False,
        nproc: Annotated[Optional[int], typer.Option(min=1, help="data-parallel processes (torchrun ranks): one per "
                                                            "GPU, or N gloo processes with --cpu; sets "
                                                            "resources.nproc (data.batch_size is the global batch)")] = None,
        as_json: Annotated[bool, typer.Option("--json", help="print the final summary as JSON")] = False,
        name: Annotated[Optional[str], typer.Option("--name", help="the run's name (default: the preset's name and "
                                                                   "the overrides, e.g. 'quickstart tt@0.1')")] = None,
        backend: Annotated[Optional[str], typer.Option("--backend", help="where the worker runs: local (this host) or "
                                                                         "slurm (a job with the preset's slurm: section); "
                                                                         "default: resources.backend")] = None,
        nodes: Annotated[Optional[int], typer.Option("--nodes", help="Slurm: one job on N nodes, --nproc ranks on "
                                                                     "each (sets slurm.nodes)")] = None,
        nnodes: Annotated[Optional[int], typer.Option("--nnodes", help="without Slurm: the run spans N machines; run "
                                                                       "this command on each with its --node-rank")] = None,
        node_rank: Annotated[Optional[int], typer.Option("--node-rank", help="with --nnodes: this machine's place, 0 on "
                                                                             "the machine of --master")] = None,
        master: Annotated[Optional[str], typer.Option("--master", help="with --nnodes: HOST:PORT of node 0, where "
                                                                       "the nodes meet (torchrun's static rendezvous)")] = None,
    ) -> None:
        """Run an experiment from a preset (or --resume an earlier run)."""
        from lowrank.errors import UserError

        from console.backends import nodes as by_hand

        rendezvous = by_hand.parse(nnodes, node_rank, master)  # bad values: one line, before anything exists
        if nodes is not None:
            if resume:
                raise UserError("--resume keeps the run's slurm.nodes; drop --nodes", key="--nodes")
            if nnodes is not None:
                raise UserError("--nodes is a Slurm job's node count and --nnodes a run started by hand on each "
                                "machine: give one of them", key="--nodes")
            set_ = [*set_, nodes_override(nodes)]
        if rendezvous is not None:
            if detach:
                raise UserError("--detach cannot start a run on several machines: run each node's `lowrank run` in "
                                "the foreground (e.g. under tmux or nohup)", key="--detach")
            if backend not in (None, "local"):
                raise UserError("--nnodes/--node-rank/--master start a run by hand on each machine; a Slurm job gets "
                                "its nodes from --nodes", key="--nnodes", hint="--backend slurm --nodes N")
        if backend is not None:
            if resume:
                raise UserError("--resume continues a run on its own backend; drop --backend", key="--backend")
            set_ = [*set_, backend_override(backend)]

        if cpu and (gpus or gpu):  # before anything exists: a refused run leaves no queued orphan
            raise UserError("--cpu cannot be combined with --gpus/--gpu", key="--cpu", hint="give one of them")
        if nproc is not None:
            if resume:
                raise UserError("--resume keeps the run's resources.nproc; drop --nproc", key="--nproc")
            set_ = [*set_, f"resources.nproc={nproc}"]
        if name is not None and (not name.strip() or resume):
            raise UserError("--name needs a non-empty name" if not resume else
                            "--resume keeps the run's name; drop --name", key="--name")
        placement = {"gpus": gpus, "gpu": gpu, "cpu": cpu}
        if rendezvous is not None and rendezvous.node_rank > 0:  # join node 0's run: write nothing but a log
            raise typer.Exit(_join(preset, set_, resume, rendezvous, placement, name=name, as_json=as_json))
        run_dir = _prepare(preset, set_, resume, placement=placement, name=name, nodes=nodes, rendezvous=rendezvous)
        if detach:
            from console.scheduler import requirement_from_cli, submit

            submit(run_dir, requirement_from_cli(gpus=gpus, gpu=gpu, cpu=cpu), resume=resume is not None)
            typer.echo(json.dumps({"run_id": run_dir.run_id, "run_dir": str(run_dir.path), "state": "queued"})
                       if as_json else run_dir.run_id)
            return
        code = run_foreground(run_dir, resume=resume is not None, gpus=gpu or [], cpu=cpu, as_json=as_json,
                              rendezvous=rendezvous)
        raise typer.Exit(code)


def backend_override(name: str) -> str:
    """``--backend NAME`` as the override ``resources.backend=NAME`` (checked against the registry)."""
    from console import backends

    backends.get(name)  # an unknown name: UserError listing the known ones, before anything exists
    return f"resources.backend={name}"


def nodes_override(nodes: int) -> str:
    """``--nodes N`` as the override ``slurm.nodes=N`` (N >= 1; one line otherwise)."""
    from lowrank.errors import UserError

    if nodes < 1:
        raise UserError(f"--nodes must be at least 1, got {nodes}", key="--nodes",
                        hint="the Slurm job's nodes, e.g. --backend slurm --nodes 2")
    return f"slurm.nodes={nodes}"


def check_nodes_backend(config, nodes: Optional[int]) -> None:
    """``--nodes N`` > 1 is a Slurm job's node count: refused (one line) for a run on this host."""
    from lowrank.errors import UserError

    if nodes is not None and nodes > 1 and config.resources.backend != "slurm":
        raise UserError(f"--nodes {nodes} is the node count of a Slurm job, but the run's backend is "
                        f"{config.resources.backend}", key="--nodes",
                        hint="add --backend slurm, or without Slurm start each machine with --nnodes N "
                             "--node-rank R --master HOST:PORT")


def _check_by_hand(config, rendezvous) -> None:
    from lowrank.errors import UserError

    if rendezvous is not None and config.resources.backend != "local":
        raise UserError(f"--nnodes starts a run by hand on each machine, but the preset's resources.backend is "
                        f"{config.resources.backend}", key="--nnodes",
                        hint="--backend local, or let Slurm place the nodes: --backend slurm --nodes N")


def _prepare(preset: Optional[Path], overrides: list[str], resume: Optional[str], placement: dict,
             name: Optional[str] = None, nodes: Optional[int] = None, rendezvous=None):
    """Validate the preset, run the up-front checks, and only then create its run directory
    (or find the run to resume). ``rendezvous``: this is node 0 of a run on several machines."""
    from lowrank.config import from_dict, load
    from lowrank.errors import UserError
    from lowrank.rundir import CONFIG_FILE, RunDir, lowrank_home

    from console.precheck import precheck

    nnodes = rendezvous.nnodes if rendezvous is not None else 1
    if resume:
        if preset is not None or overrides:
            raise UserError("--resume continues a run with its saved config; drop PRESET and --set", key="--resume")
        from console.runs import RunStore, relaunch

        target = RunStore().resolve(resume)
        source = str(target.file(CONFIG_FILE))
        config = from_dict(target.read_config(), source=source)
        _check_by_hand(config, rendezvous)
        precheck(config, source=source, nnodes=nnodes, **placement)
        _check_home(rendezvous)
        # refuses a running or finished run, or one without a checkpoint; keeps the attempt history
        return relaunch(target, resume=True)
    if preset is None:
        raise UserError("missing PRESET", hint="lowrank run presets/quickstart.yaml")
    config = load(preset, overrides)  # raises ConfigError before anything is created
    check_nodes_backend(config, nodes)
    _check_by_hand(config, rendezvous)
    # budget, device, GPUs, data files, teacher: the worker's checks, up front
    precheck(config, source=preset, overrides=overrides, nnodes=nnodes, **placement)
    _check_home(rendezvous)
    from console.naming import name_run

    extra = {"preset": str(preset)}
    if rendezvous is not None:  # how node R finds this run (console.backends.nodes.find_run)
        extra.update(rendezvous.status_fields(config.resources.nproc))
    return RunDir.create(name_run(config.to_dict(), overrides, name), home=lowrank_home(), extra_status=extra)


def _check_home(rendezvous) -> None:
    """A run on several machines: its directory must be where every machine sees it (warning or refusal)."""
    if rendezvous is None:
        return
    from lowrank.rundir import lowrank_home

    from console.backends.nodes import check_home

    warning = check_home(rendezvous, lowrank_home())
    if warning:
        typer.secho(warning, fg="yellow", err=True)


def _join(preset: Optional[Path], overrides: list[str], resume: Optional[str], rendezvous, placement: dict,
          *, name: Optional[str], as_json: bool) -> int:
    """Node R > 0 of a run on several machines: check, find node 0's run, start this node's torchrun,
    follow the run (reading only), and stop this node's ranks on Ctrl-C (they stop every node)."""
    import signal
    import subprocess

    from lowrank.config import load
    from lowrank.errors import UserError
    from lowrank.rundir import FINAL_STATES, lowrank_home

    from console.backends import nodes as by_hand
    from console.backends.local import run_nproc
    from console.precheck import precheck

    config_dict, run_id = None, None
    if resume:
        if preset is not None or overrides:
            raise UserError("--resume continues a run with its saved config; drop PRESET and --set", key="--resume")
        from console.run_ids import resolve_in
        from lowrank.rundir import runs_root

        run_id = resolve_in(runs_root(lowrank_home()), resume).run_id
    else:
        if preset is None:
            raise UserError("missing PRESET", hint="lowrank run presets/quickstart.yaml")
        config = load(preset, overrides)
        _check_by_hand(config, rendezvous)
        precheck(config, source=preset, overrides=overrides, nnodes=rendezvous.nnodes, **placement)
        from console.naming import name_run

        config_dict = name_run(config.to_dict(), overrides, name)
    _check_home(rendezvous)
    run_dir = by_hand.find_run(rendezvous, config_dict, home=lowrank_home(), run_id=run_id,
                               say=lambda text: typer.echo(text, err=True))
    resume_flag = bool(run_dir.read_status().get("resume"))
    proc = by_hand.join(run_dir, rendezvous, nproc=run_nproc(run_dir), resume=resume_flag,
                        gpus=[] if placement.get("cpu") else placement.get("gpu") or None)
    if not as_json:
        typer.echo(f"run {run_dir.run_id}  (node {rendezvous.node_rank}/{rendezvous.nnodes}: torchrun pid {proc.pid}, "
                   f"log {run_dir.path / rendezvous.log_name()})")
    try:
        status = _follow(run_dir, proc.pid, quiet=as_json, alive=lambda: proc.poll() is None, readonly=True)
    except KeyboardInterrupt:
        typer.echo("\nstopping (Ctrl-C): this node's ranks stop, and every node with them...", err=True)
        proc.send_signal(signal.SIGTERM)  # torchrun's agent passes it to this node's ranks
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
        status = run_dir.read_status()
    code = proc.wait()
    deadline = time.monotonic() + 30
    while status.get("state") not in FINAL_STATES and time.monotonic() < deadline:  # node 0 records the end
        time.sleep(POLL_SECONDS)
        status = run_dir.read_status()
    _print_summary(run_dir, status, as_json)
    if status.get("state") in FINAL_STATES:
        return int(status.get("exit_code") or (0 if status.get("state") == "finished" else 1))
    return code or 1


def run_foreground(run_dir, *, resume: bool, gpus: list[int], cpu: bool, as_json: bool, rendezvous=None) -> int:
    """Start the worker, draw its progress until it ends, stop it cleanly on Ctrl-C."""
    from console import backends

    backend = backends.for_run(run_dir)
    start = {"rendezvous": rendezvous} if rendezvous is not None else {}
    pid = backend.start(run_dir, gpus=[] if cpu else gpus or None, resume=resume, **start)
    if not as_json:
        typer.echo(f"run {run_dir.run_id}  ({backend.describe(pid)}, log {run_dir.path / 'output.log'})")
    # a job elsewhere (Slurm): its backend says whether it still exists; locally the pid does
    alive = None if backend.name == backends.DEFAULT else (lambda: backend.alive(run_dir.read_status()) is not False)
    try:
        status = _follow(run_dir, pid, quiet=as_json, alive=alive)
    except KeyboardInterrupt:
        typer.echo("\nstopping (Ctrl-C): asking the worker to stop...", err=True)
        backend.kill(run_dir)
        status = run_dir.read_status()
    _print_summary(run_dir, status, as_json)
    return int(status.get("exit_code") or (0 if status.get("state") == "finished" else 1))


def _follow(run_dir, pid: int, quiet: bool, alive=None, readonly: bool = False) -> dict:
    """Poll the run directory, updating a progress bar, until the worker has ended.

    ``alive``: whether the worker (or its job) still exists; default: the local pid lives.
    ``readonly``: this process may not write the run (a joined node): the status as it is."""
    import psutil
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from console.runs import MetricsTail
    from lowrank.rundir import FINAL_STATES

    tail = MetricsTail.of(run_dir)
    val_err = None
    progress = Progress(TextColumn("[bold]epoch {task.fields[epoch]}"), BarColumn(),
                        TextColumn("{task.percentage:>3.0f}%"), TextColumn("{task.fields[stats]}"),
                        TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), disable=quiet, transient=False)
    with progress:
        task = progress.add_task("train", total=None, epoch="-", stats="starting...")
        while True:
            records = tail.read()
            status = run_dir.read_status()
            epochs = status.get("epochs") or 1
            for record in records:
                if not _well_formed(record):
                    continue  # a hand-edited or foreign line: the bar skips it
                if record.get("event") == "eval":
                    val_err = record.get("err1")
                if record.get("event") == "step":
                    done = (record["epoch"] - 1) * record["batches"] + record["batch"]
                    stats = (f"loss {record['loss']:.4f}  err {record['err1']:.2f}%"
                             + (f"  val err {val_err:.2f}%" if val_err is not None else "")
                             + (f"  {record['throughput']:.0f} img/s" if record.get("throughput") else ""))
                    progress.update(task, total=record["batches"] * epochs, completed=done,
                                    epoch=f"{record['epoch']}/{epochs}", stats=stats)
            if status.get("state") in FINAL_STATES:
                return status
            if not (alive() if alive is not None else _alive(psutil, pid)):
                time.sleep(POLL_SECONDS)  # let a final status write land
                if readonly:
                    return run_dir.read_status()
                from console.runs import reconcile

                status = reconcile(run_dir)  # a Slurm run: the job's final state
                if status.get("state") not in FINAL_STATES:
                    status = run_dir.update_status(state="failed", error="worker disappeared")
                return status
            time.sleep(POLL_SECONDS)


def _well_formed(record: dict) -> bool:
    """An event the progress bar can draw: finite numbers where it computes or formats."""
    from lowrank.run_files import number

    if record.get("event") == "eval":
        return record.get("err1") is None or number(record.get("err1")) is not None
    if record.get("event") == "step":
        ints = all(isinstance(record.get(key), int) and not isinstance(record.get(key), bool)
                   for key in ("epoch", "batch", "batches"))
        return ints and all(number(record.get(key)) is not None for key in ("loss", "err1")) and (
            record.get("throughput") is None or number(record.get("throughput")) is not None)
    return True


def _alive(psutil, pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


# the summary keys of a run with a ``bayes:`` section (lowrank.bayes): test_err1 is the masked model's
BAYES_KEYS = ("compression_architecture", "compression_precision", "masked_test_err1", "pruned_test_err1",
              "quantised_test_err1", "unmasked_test_err1", "pruned_matches_masked", "pruned_max_abs_diff",
              "pruned_problem", "dense_baseline_err1", "dense_baseline_run", "bayes_dense_weights",
              "bayes_kept_weights")


# the summary keys of a run measured with ``bench.after_run`` (lowrank.deploy.records.SUMMARY_KEYS)
LATENCY_KEYS = ("latency_ms_b1", "throughput", "throughput_batch", "latency_device", "latency_threads",
                "latency_torch", "latency_error")


def _print_summary(run_dir, status: dict, as_json: bool) -> None:
    keys = ("run_id", "name", "state", "params", "macs", "dense_params", "dense_macs", "method", "hp",
            "budget_target", "budget_gap", "final_val_err1", "best_val_err1", "best_epoch", "test_err1",
            "test_err5", "val_is_test", "train_seconds", "error")
    summary = {key: status.get(key) for key in keys}
    summary.update({key: status[key] for key in BAYES_KEYS if key in status})  # bayes: runs only
    summary.update({key: status[key] for key in LATENCY_KEYS if key in status})  # bench.after_run only
    summary["run_dir"] = str(run_dir.path)
    if as_json:
        from console.safe_text import dumps

        typer.echo(dumps(summary, indent=2))  # NaN/inf -> null: always valid JSON
        return

    def pct(value) -> str:
        return "-" if value is None else f"{value:.2f}%"

    from console.safe_text import clean, clean_block

    colour = {"finished": "green", "killed": "yellow", "pruned": "yellow"}.get(status.get("state"), "red")
    typer.secho(f"\n{clean(status.get('state'))}: {clean(status.get('name'))}", fg=colour, bold=True)
    if status.get("params") is not None:
        ratio = status["params"] / status["dense_params"] if status.get("dense_params") else float("nan")
        typer.echo(f"  parameters   {status['params']:,}  ({ratio:.3f} of dense {status.get('dense_params', 0):,})")
        typer.echo(f"  mult-adds    {status.get('macs', 0):,}  (dense {status.get('dense_macs', 0):,})")
        method = status.get("method")
        typer.echo(f"  method       {clean(method)}" + (f"  hp={status['hp']:.6g}" if status.get("hp") is not None else ""))
    val = "val (= test set)" if status.get("val_is_test") else "val"
    typer.echo(f"  top-1 error  final {val} {pct(status.get('final_val_err1'))}   best {val} {pct(status.get('best_val_err1'))}"
               f"   test {pct(status.get('test_err1'))}")
    if status.get("compression_architecture") is not None or status.get("masked_test_err1") is not None:
        def factor(value) -> str:
            return "-" if value is None else f"{value:.1f}x"

        typer.echo(f"  bayes        architecture {factor(status.get('compression_architecture'))}   with weight "
                   f"uncertainty {factor(status.get('compression_precision'))}")
        typer.echo(f"  bayes error  masked {pct(status.get('test_err1'))}   pruned {pct(status.get('pruned_test_err1'))}"
                   f"   quantised {pct(status.get('quantised_test_err1'))}   unmasked "
                   f"{pct(status.get('unmasked_test_err1'))}   dense baseline {pct(status.get('dense_baseline_err1'))}")
    if status.get("train_seconds") is not None:
        typer.echo(f"  train time   {status['train_seconds']:.1f} s")
    if status.get("latency_ms_b1") is not None:
        threads = f", {status['latency_threads']} threads" if status.get("latency_threads") else ""
        typer.echo(f"  latency      {status['latency_ms_b1']:.3f} ms at batch 1, {status.get('throughput') or 0:,.0f} img/s "
                   f"at batch {status.get('throughput_batch')} ({clean(status.get('latency_device'))}{threads}; eager)")
    elif status.get("latency_error"):
        typer.echo(f"  latency      not measured: {clean_block(status['latency_error'])}")
    if status.get("error"):
        typer.echo(f"  error        {clean_block(status['error'])}")
    typer.echo(f"  run dir      {run_dir.path}")
