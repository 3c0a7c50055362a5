"""The training worker: ``python -m lowrank.train RUN_DIR [--resume]``.

Reads ``RUN_DIR/config.yaml``, trains (``loop.train``), and records how the run ended
in the run directory (status.json, metrics.jsonl, a results.csv row).

Exit codes: 0 finished, 1 failed (error summary in status.json), 128+signal when
stopped by SIGTERM/SIGINT (state ``killed``) or by the preemption signal.

Under torchrun (``resources.nproc`` > 1) every rank runs this; rank 0 alone records how the
run ended, the others only exit with the same code (lowrank.distributed, lowrank.train.parallel).

``LOWRANK_PREEMPT_SIGNAL`` (e.g. ``USR2``; set by the Slurm backend for the signal Slurm
sends before the time limit or a preemption) stops the worker the same way at the next
step, but it is not a kill: the run keeps its non-final state, the end event says
``preempted`` and the backend requeues it to resume from the last checkpoint.

``LOWRANK_MAIN_LOG`` (a path; set by the Slurm backend for a job on several nodes, where each
node's launcher writes its own log and rank 0 may be on any node): rank 0 appends its stdout
and stderr to that file (the run's output.log) instead of its node's log.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import traceback
from pathlib import Path

from ..distributed import read_env
from ..errors import UserError
from ..faults import fault_point
from ..results import write_result
from ..rundir import CONFIG_FILE, RunDir, now_iso
from ..trial import Pruned
from .stop import StopFlag, StopRequested

PREEMPT_ENV = "LOWRANK_PREEMPT_SIGNAL"  # a signal name (USR2, SIGUSR1): stop for a requeue, not a kill
MAIN_LOG_ENV = "LOWRANK_MAIN_LOG"  # rank 0's output goes to this file (the run's output.log)


def main(argv: list[str] | None = None) -> int:
    """Worker entry point: run the experiment in RUN_DIR and record how it ended."""
    parser = argparse.ArgumentParser(prog="python -m lowrank.train", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="the run directory holding config.yaml")
    parser.add_argument("--resume", action="store_true", help="continue from checkpoint.pt")
    args = parser.parse_args(argv)
    # absolute, not resolved: a run directory that is a symlink keeps its home (results.csv
    # goes to $LOWRANK_HOME, never to the symlink target's grandparent)
    run = RunDir(Path(os.path.abspath(args.run_dir)))
    if not run.file(CONFIG_FILE).exists():
        print(f"error: {run.file(CONFIG_FILE)} not found: not a run directory", file=sys.stderr)
        return 2
    try:
        env = read_env()
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if env.is_main and os.environ.get(MAIN_LOG_ENV):
        _output_to(Path(os.environ[MAIN_LOG_ENV]), env)
    if not env.is_main:  # rank 0 writes the run directory; this rank only reads it
        from .parallel import FollowerRun

        return _follower(FollowerRun(run), args.resume, env.rank)

    stop = StopFlag()
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    preempt = _preempt_signal()
    if preempt is not None:
        signal.signal(preempt, stop)
    from .loop import NonFiniteLoss, train  # torch: only once we know this is a run directory

    try:
        summary = train(run, args.resume, stop)
    except StopRequested as stopped:
        code = 128 + stopped.signum
        if stopped.signum == preempt:  # the backend requeues the run; it resumes from its checkpoint
            run.append_metric({"event": "end", "state": "preempted", "signal": str(stopped)})
            run.update_status(exit_code=code, preempted=now_iso())
            print(f"stopped by {stopped} (time limit or preemption): resumable from the last checkpoint", flush=True)
            return code
        run.append_metric({"event": "end", "state": "killed", "signal": str(stopped)})
        run.update_status(state="killed", ended=now_iso(), exit_code=code, error=f"stopped by {stopped}")
        print(f"stopped by {stopped}", flush=True)
        return code
    except Pruned as pruned:  # a trial the study's pruner stopped at an epoch boundary: a clean end
        return _pruned(run, pruned)
    except (NonFiniteLoss, UserError) as error:
        run.append_metric({"event": "end", "state": "failed", "error": str(error)})
        run.update_status(state="failed", ended=now_iso(), exit_code=1, error=str(error))
        print(f"failed: {error}", file=sys.stderr, flush=True)
        return 1
    except BaseException as error:  # a bug or an environment failure: keep the traceback in output.log
        traceback.print_exc()
        summary_line = f"{type(error).__name__}: {error}".strip()
        run.append_metric({"event": "end", "state": "failed", "error": summary_line})
        run.update_status(state="failed", ended=now_iso(), exit_code=1, error=summary_line)
        return 1
    run.append_metric({"event": "end", "state": "finished", **summary})
    # durable record first: the status carries the summary and says a row is owed, so a kill
    # before the append below is repaired by any reader (lowrank.results.repair_results)
    status = run.update_status(state="finished", ended=now_iso(), exit_code=0, results_written=False, **summary)
    fault_point("worker-finished")
    write_result(run, status)
    fault_point("worker-result-appended")
    run.update_status(results_written=True)
    print(f"finished: test err {summary['test_err1']:.2f}% (best val {summary['best_val_err1']:.2f}%)", flush=True)
    return 0


def _output_to(path: Path, env) -> None:
    """Rank 0's stdout and stderr from now on appended to ``path`` (its node's log says where)."""
    import socket

    node = os.environ.get("SLURMD_NODENAME") or socket.gethostname()
    print(f"rank 0 of {env.world_size} is on node {node}: its output continues in {path}", flush=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    print(f"\n=== {now_iso()} rank 0 of {env.world_size} on node {node} (pid {os.getpid()})", flush=True)


def _preempt_signal() -> int | None:
    """The signal named by ``LOWRANK_PREEMPT_SIGNAL`` (``USR2`` or ``SIGUSR2``), or None."""
    name = os.environ.get(PREEMPT_ENV, "").strip().upper()
    if not name:
        return None
    return int(getattr(signal, name if name.startswith("SIG") else f"SIG{name}"))


def _follower(run, resume: bool, rank: int) -> int:
    """A rank other than 0: train in step with the others, exit as they do, write nothing."""
    stop = StopFlag()
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    preempt = _preempt_signal()
    if preempt is not None:  # Slurm signals every task of the job step: a stop, not a death
        signal.signal(preempt, stop)
    from .loop import NonFiniteLoss, train

    try:
        train(run, resume, stop)
    except StopRequested as stopped:
        return 128 + stopped.signum
    except Pruned:
        return 0
    except (NonFiniteLoss, UserError) as error:
        print(f"rank {rank} failed: {error}", file=sys.stderr, flush=True)
        return 1
    except BaseException:  # noqa: BLE001 -- the traceback goes to output.log, rank 0 records the end
        print(f"rank {rank} crashed:", file=sys.stderr, flush=True)
        traceback.print_exc()
        return 1
    return 0


def _pruned(run: RunDir, pruned: Pruned) -> int:
    """Record the final state ``pruned`` (with the summary so far) and its results.csv row; exit 0."""
    summary = getattr(pruned, "summary", {})
    run.append_metric({"event": "end", "state": "pruned", "pruned_epoch": pruned.epoch, "value": pruned.value,
                       **summary})
    status = run.update_status(state="pruned", ended=now_iso(), exit_code=0, error=None, pruned_epoch=pruned.epoch,
                               results_written=False, **summary)
    write_result(run, status)
    run.update_status(results_written=True)
    print(f"pruned: {pruned}", flush=True)
    return 0
