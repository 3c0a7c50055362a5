"""Up-front checks of a run, before its directory exists: what the worker would find too late.

``config.load`` checks the schema and the registries; these checks need the host or the
library: the parameter budget is reachable (the network is built on the ``meta`` device,
as ``lowrank count`` does), ``train.device`` asks for CUDA only where there is CUDA, the
requested GPUs exist here, the dataset's files are on disk, and the teacher resolves,
reads, and fits its network. ``lowrank run`` (foreground and ``--detach``) and
``lowrank compare`` call :func:`precheck` in-process; the console, which must not import
torch, runs the same checks in a subprocess::

    python -m console.precheck PRESET [--set K=V ...] [--gpu N ...] [--gpus N] [--cpu] [--home DIR]

which prints one JSON object -- ``{"ok": true, ...facts}`` or ``{"ok": false, "error":
"<one line>", "file": ..., "key": ..., "hint": ...}`` -- and exits 0 or 2;
:func:`check_in_subprocess` wraps that and raises the same :class:`UserError`.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

from lowrank.errors import UserError

LOCAL_BACKEND = "local"


def _check_requirement(config, req: dict[str, Any], facts: dict[str, Any]) -> None:
    """The scheduler's own reading of resources + flags (a CPU run asking for GPUs is refused)."""
    from console.scheduler import resolve_requirement

    need = resolve_requirement(config.to_dict(), req)
    facts["gpus_needed"], facts["gpu_ids"] = need.gpus, need.gpu_ids


def _check_device(config, req: dict[str, Any], facts: dict[str, Any]) -> None:
    """``train.device: cuda`` needs CUDA where the worker runs (this host for the local backend)."""
    device = config.train.device
    if not device.startswith("cuda"):
        return
    if req.get("gpus") == 0:
        raise UserError(f"train.device is {device} but the run is placed on the CPU", key="train.device",
                        hint="drop --cpu, or --set train.device=cpu")
    import torch

    if not torch.cuda.is_available():
        raise UserError(f"train.device is {device} but no CUDA device is visible on this host",
                        key="train.device", hint="use --set train.device=cpu (or auto, which falls back to the CPU)")


def _check_gpus(config, req: dict[str, Any], facts: dict[str, Any]) -> None:
    """GPU indices and counts the run asks for exist on this host (else it would queue forever)."""
    wanted_ids = facts.get("gpu_ids") or []
    wanted = facts.get("gpus_needed")
    if not wanted_ids and not wanted:
        return
    from console.gpus import read_gpus

    gpus, nvml_error, _ = read_gpus()
    have = sorted(gpu.index for gpu in gpus)
    where = f"GPUs {', '.join(map(str, have))}" if have else f"no GPU: {nvml_error or 'none found'}"
    key = "--gpu" if req.get("gpu_ids") else "resources.gpu_ids"
    missing = [index for index in wanted_ids if index not in have]
    if missing:
        raise UserError(f"GPU {missing[0]} does not exist on this host ({where})", key=key,
                        hint="pick one of the listed GPUs (lowrank gpus), or --cpu")
    if wanted and wanted > len(have):
        key = "--gpus" if "gpus" in req else "resources.gpus"
        raise UserError(f"the run needs {wanted} GPU(s) but this host has {len(have)} ({where})", key=key,
                        hint="ask for fewer GPUs (--gpus N), or --cpu")


def _check_parallel(config, req: dict[str, Any], facts: dict[str, Any], nnodes: int = 1) -> None:
    """A data-parallel run (``resources.nproc`` ranks on each of ``nnodes`` nodes: a Slurm job's
    ``slurm.nodes``, or the machines of ``lowrank run --nnodes``): the global batch splits over all
    the ranks, the config is one the ranks can train, and on a GPU host (not ``--cpu``) there is a
    GPU per rank of this node."""
    nproc, nodes = config.resources.nproc, nnodes
    if nproc * nodes <= 1:
        return
    from lowrank.train.parallel import check_config

    check_config(config, nproc * nodes)
    facts["world_size"] = nproc * nodes
    if nodes > 1:
        facts["nodes"] = nodes
    if nproc <= 1 or req.get("gpus") == 0 or config.train.device == "cpu" or config.resources.backend != LOCAL_BACKEND:
        return
    from console.gpus import read_gpus

    gpus, _, _ = read_gpus()
    if gpus and len(gpus) < nproc:
        raise UserError(f"{nproc} data-parallel ranks need {nproc} GPUs (one each) but this host has {len(gpus)}",
                        key="resources.nproc", hint=f"--nproc {len(gpus)}, or --cpu for {nproc} gloo ranks on the CPU")


def _check_data(config, req: dict[str, Any], facts: dict[str, Any]) -> None:
    from lowrank.data_files import check_dataset_files

    check_dataset_files(config.data)


def _check_network(config, req: dict[str, Any], facts: dict[str, Any]) -> None:
    """Build the network on ``meta`` with the budget solved: an unreachable budget fails here."""
    import torch

    from lowrank.build import build_network
    from lowrank.data import dataset_shape

    num_classes, input_shape = dataset_shape(config.data)
    with torch.device("meta"):
        net = build_network(config, num_classes, input_shape, device="meta")
    facts.update(net.summary(), num_classes=num_classes, input_shape=list(input_shape))


def _check_teacher(config, req: dict[str, Any], facts: dict[str, Any], home: Path | None = None) -> None:
    """The teacher resolves, reads and fits its network -- unless it is a run still training.

    A student queued behind its teacher's run names a run that has no final checkpoint
    yet; that is a normal workflow, so such a teacher is checked when the student starts.
    """
    if config.teacher is None:
        return
    from lowrank.rundir import FINAL_STATES, RunDir, runs_root

    spec = config.teacher.checkpoint
    run_dir = runs_root(home) / spec
    if "/" not in spec and run_dir.is_dir() and not Path(spec).is_file():
        state = RunDir(run_dir).read_status().get("state")
        if state not in FINAL_STATES:
            facts["teacher"] = f"run {spec} is {state}: checked when this run starts"
            return
    import torch

    from lowrank.teacher import build_teacher

    if "num_classes" not in facts:
        from lowrank.data import dataset_shape

        num_classes, shape = dataset_shape(config.data)
        facts.update(num_classes=num_classes, input_shape=list(shape))
    num_classes, input_shape = facts["num_classes"], tuple(facts["input_shape"])
    _, path = build_teacher(config, num_classes, input_shape, torch.device("cpu"), home)
    facts["teacher"] = str(path)


def _check_extras(config, req: dict[str, Any], facts: dict[str, Any]) -> None:
    """Every optional feature the config turns on has its extra installed here (``log.tensorboard``
    needs the tensorboard extra): one line naming the key and the install line, not a worker that
    fails after its run directory exists. Checked on this host for every backend (the worker runs
    this same environment, on a Slurm node too)."""
    from lowrank.extras import check_config

    check_config(config)


# cheap checks first; each raises a UserError naming file/key/hint
CHECKS: tuple[Callable[..., None], ...] = (_check_extras, _check_requirement, _check_parallel, _check_device, _check_gpus,
                                          _check_data, _check_network, _check_teacher)


def precheck(config, *, gpus: int | None = None, gpu: Sequence[int] | None = None, cpu: bool = False,
             home: Path | None = None, backend: str = LOCAL_BACKEND, source: str | Path | None = None,
             overrides: Sequence[str] = (), network: bool = True, nnodes: int = 1) -> dict[str, Any]:
    """Run every up-front check on a validated ``config`` placed as the CLI flags say; the facts found.

    ``backend`` other than local skips the host checks (device, GPUs, data files): the run
    goes to another machine, whose CUDA, GPUs and disks this host cannot see. ``source``
    and ``overrides`` (the preset and its ``--set`` list) let an error name the file to edit.
    ``network=False`` skips the budget check (``lowrank compare`` solves each run's budget itself).
    ``nnodes``: the machines of a run started by hand on several (``lowrank run --nnodes``).
    """
    try:
        return _precheck(config, gpus=gpus, gpu=gpu, cpu=cpu, home=home, backend=backend, network=network,
                         nnodes=nnodes)
    except UserError as error:
        if error.file is None and error.key and not error.key.startswith("--"):
            keys = [text.partition("=")[0].strip() for text in overrides]
            overridden = any(k == error.key or k.startswith(f"{error.key}.") or error.key.startswith(f"{k}.")
                             for k in keys)
            error.file = "--set" if overridden else (str(source) if source is not None else None)
            error.args = (error.render(),)
        raise


def _precheck(config, *, gpus: int | None, gpu: Sequence[int] | None, cpu: bool, home: Path | None,
              backend: str, network: bool, nnodes: int = 1) -> dict[str, Any]:
    from console.scheduler import requirement_from_cli

    if cpu and (gpus or gpu):
        raise UserError("--cpu cannot be combined with --gpus/--gpu", key="--cpu", hint="give one of them")
    req = requirement_from_cli(gpus=gpus, gpu=list(gpu or []), cpu=cpu)
    facts: dict[str, Any] = {}
    if backend == LOCAL_BACKEND:
        backend = config.resources.backend  # the preset's resources.backend (or --backend as its override)
    from console import backends

    backends.get(backend).check(config.to_dict(), home)  # e.g. slurm: sbatch here, a home the nodes can see
    host_checks = (_check_device, _check_gpus, _check_data)
    for check in CHECKS:
        if (backend != LOCAL_BACKEND and check in host_checks) or (check is _check_network and not network):
            continue
        if check is _check_teacher:
            check(config, req, facts, home)
        elif check is _check_parallel:  # a Slurm job's nodes are its slurm.nodes
            check(config, req, facts, config.slurm.nodes if backend == "slurm" else nnodes)
        else:
            check(config, req, facts)
    return facts


def precheck_preset(preset: Path | str, overrides: Sequence[str] = (), **placement: Any) -> dict[str, Any]:
    """Load ``preset`` with ``overrides`` (ConfigError on bad input) and :func:`precheck` it."""
    from lowrank.config import load

    return precheck(load(preset, list(overrides)), source=preset, overrides=overrides, **placement)


def check_in_subprocess(preset: Path | str, overrides: Sequence[str] = (), *, gpus: int | None = None,
                        gpu: Sequence[int] | None = None, cpu: bool = False, home: Path | None = None,
                        timeout: float = 600.0) -> dict[str, Any]:
    """:func:`precheck_preset` in a child ``python -m console.precheck`` (the caller imports no torch).

    Returns the facts; a refused input raises the :class:`UserError` the child reported.
    """
    command = [sys.executable, "-m", "console.precheck", str(preset)]
    for override in overrides:
        command += ["--set", override]
    for index in gpu or ():
        command += ["--gpu", str(index)]
    if gpus is not None:
        command += ["--gpus", str(gpus)]
    if cpu:
        command.append("--cpu")
    if home is not None:
        command += ["--home", str(home)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise UserError(f"the up-front checks of {preset} took longer than {timeout:.0f} s",
                        hint="run `python -m console.precheck PRESET` in a shell to see why") from None
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    try:
        answer = json.loads(lines[-1])
    except (IndexError, ValueError):
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise UserError(f"the up-front checks of {preset} crashed (exit {done.returncode}): {tail}",
                        hint="run `python -m console.precheck PRESET` in a shell to see the traceback") from None
    if not answer.get("ok"):
        raise UserError(answer.get("detail") or answer.get("error") or "refused", file=answer.get("file"),
                        key=answer.get("key"), hint=answer.get("hint"))
    return answer


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m console.precheck``: one JSON line on stdout; exit 0 (ok) or 2 (refused)."""
    import os

    parser = argparse.ArgumentParser(prog="python -m console.precheck", description=__doc__.splitlines()[0])
    parser.add_argument("preset", type=Path)
    parser.add_argument("--set", "-s", dest="overrides", action="append", default=[])
    parser.add_argument("--gpu", type=int, action="append", default=[])
    parser.add_argument("--gpus", type=int, default=None)
    parser.add_argument("--cpu", action="store_true")
    parser.add_argument("--home", type=Path, default=None, help="LOWRANK_HOME (teacher run ids resolve here)")
    args = parser.parse_args(argv)
    if args.home is not None:
        os.environ["LOWRANK_HOME"] = str(args.home)
    from console.safe_text import dumps

    try:
        facts = precheck_preset(args.preset, args.overrides, gpus=args.gpus, gpu=args.gpu, cpu=args.cpu,
                                home=args.home)
    except UserError as error:
        print(dumps({"ok": False, "error": error.render(), "detail": error.detail, "file": error.file,
                     "key": error.key, "hint": error.hint}))
        return 2
    print(dumps({"ok": True, **facts}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
