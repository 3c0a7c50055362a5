"""One run on several machines without Slurm: ``lowrank run PRESET --nnodes N --node-rank R
--master HOST:PORT`` on each machine (torchrun's static rendezvous).

Node 0 hosts the rendezvous at ``HOST:PORT`` (an address of node 0 the others can reach) and is
an ordinary local run: it creates the run directory (status.json records ``nnodes`` and
``master``, so the others can find it) and starts ``torchrun --nnodes N --node-rank 0
--master-addr HOST --master-port PORT --nproc-per-node nproc`` through the local backend; its
rank 0 alone writes the run directory. Node R > 0 writes nothing but its own log: it finds node
0's run in the shared ``LOWRANK_HOME`` (the newest queued or running run with the same master
and node count, created or launched within :data:`JOIN_WINDOW_S`; its config must be the one
this node resolved) -- waiting for it as long as torchrun would wait for node 0 -- and starts
its own torchrun with ``--node-rank R``, its output in ``RUN_DIR/output.node<R>.log``. Every
launcher carries the run's ``LOWRANK_RUN_ID``, and the ranks check at start that they all
belong to the same run (a node that joined a stale run is refused, not trained).

Bad values are refused in one line before anything exists: ``--nnodes`` < 1, ``--node-rank``
outside ``0..N-1``, a ``--master`` that is not ``HOST:PORT`` or does not resolve, a home that
the other machines cannot see (unless the master is a loopback address: then every node is
this machine).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Mapping

from lowrank.errors import UserError
from lowrank.rundir import LOG_FILE, STATUS_FILE, RunDir, now_iso, runs_root

JOIN_WINDOW_S = 600.0  # torchrun's static rendezvous waits this long for the other nodes (its default)
POLL_S = 0.5
HINT = "on each machine: lowrank run PRESET --nnodes N --node-rank R --master HOST:PORT (R = 0 on HOST)"


@dataclasses.dataclass(frozen=True)
class Rendezvous:
    """Where the nodes of a run started by hand meet, and which of them this machine is."""

    nnodes: int
    node_rank: int
    host: str
    port: int
    addresses: tuple[str, ...] = ()  # what ``host`` resolved to

    @property
    def master(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def on_this_machine(self) -> bool:
        """The master is a loopback address: every node is this machine (none elsewhere could reach it)."""
        return bool(self.addresses) and all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in self.addresses)

    def torchrun_args(self) -> list[str]:
        return ["--nnodes", str(self.nnodes), "--node-rank", str(self.node_rank), "--master-addr", self.host,
                "--master-port", str(self.port)]

    def status_fields(self, nproc: int) -> dict[str, Any]:
        """What node 0 records: how the others find the run (:func:`find_run`), and its shape."""
        return {"nnodes": self.nnodes, "master": self.master, "rendezvous": "static", "world_size": self.nnodes * nproc}

    def log_name(self) -> str:
        """Node 0's output is the run's output.log (rank 0 is there); node R's its own file."""
        return LOG_FILE if self.node_rank == 0 else f"output.node{self.node_rank}.log"


def parse(nnodes: int | None, node_rank: int | None, master: str | None) -> Rendezvous | None:
    """The validated flags (None: one machine); a bad value is a one-line UserError."""
    if nnodes is None:
        if node_rank is not None or master is not None:
            raise UserError("--node-rank and --master belong to a run on several machines: give --nnodes N too",
                            key="--nnodes", hint=HINT)
        return None
    if nnodes < 1:
        raise UserError(f"--nnodes must be at least 1, got {nnodes}", key="--nnodes", hint=HINT)
    if node_rank is not None and not 0 <= node_rank < nnodes:
        raise UserError(f"--node-rank {node_rank} is not one of the {nnodes} nodes (0..{nnodes - 1})",
                        key="--node-rank", hint=HINT)
    if nnodes == 1:
        return None  # one machine: an ordinary run (--master is not needed)
    if node_rank is None:
        raise UserError(f"--nnodes {nnodes} needs --node-rank R: 0 on the machine of --master, 1..{nnodes - 1} "
                        f"on the others", key="--node-rank", hint=HINT)
    if not master:
        raise UserError(f"--nnodes {nnodes} needs --master HOST:PORT (node 0's address and a free port)",
                        key="--master", hint=HINT)
    host, port = _split_master(master)
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as error:
        raise UserError(f"--master {master}: the host {host!r} does not resolve ({getattr(error, 'strerror', error)})",
                        key="--master", hint="give node 0's hostname or IP address as the other machines reach it")
    addresses = tuple(sorted({str(info[4][0]) for info in found}))
    return Rendezvous(nnodes, node_rank, host, port, addresses)


def _split_master(master: str) -> tuple[str, int]:
    text = master.strip()
    if text.startswith("["):  # [IPv6]:PORT
        host, _, rest = text[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port_text = text.rpartition(":")
    if not host or not port_text:
        raise UserError(f"--master {master!r} is not HOST:PORT", key="--master", hint="e.g. --master node01:29500")
    try:
        port = int(port_text)
    except ValueError:
        port = -1
    if not 1 <= port <= 65535:
        raise UserError(f"--master {master!r}: the port must be a number in 1..65535", key="--master",
                        hint="e.g. --master node01:29500")
    return host, port


def check_home(rendezvous: Rendezvous, home: Path) -> str | None:
    """The run directory must be on a filesystem every node sees: refused (UserError) when it is
    local to this machine, unless every node is this machine; a warning when it may be local."""
    if rendezvous.on_this_machine:
        return None
    from console.backends.slurm.shared_fs import check_home_shared

    return check_home_shared(home, f"the other machines of --nnodes {rendezvous.nnodes}", "the other machines")


# ---------------------------------------------------------------- node R: find node 0's run, join it


def _fresh(status: Mapping[str, Any], now: float) -> bool:
    from console.runs import parse_time

    times = [parse_time(status.get(key)) for key in ("created", "launched", "requeued", "heartbeat")]
    newest = max((t for t in times if t is not None), default=None)
    return newest is not None and now - newest <= JOIN_WINDOW_S


def _first_difference(mine: Any, theirs: Any, prefix: str = "") -> str | None:
    if isinstance(mine, dict) and isinstance(theirs, dict):
        for key in sorted(set(mine) | set(theirs)):
            found = _first_difference(mine.get(key), theirs.get(key), f"{prefix}{key}.")
            if found:
                return found
        return None
    if mine != theirs:
        return f"{prefix.rstrip('.')} is {theirs!r} there and {mine!r} here"
    return None


def find_run(rendezvous: Rendezvous, config: Mapping[str, Any] | None, *, home: Path, run_id: str | None = None,
             timeout: float = JOIN_WINDOW_S, say: Callable[[str], None] | None = None) -> RunDir:
    """Node 0's run for this node to join (reading only): the newest queued or running run whose
    status names this master and node count (``run_id``: that run, once node 0 has relaunched it),
    waited for up to ``timeout`` seconds. ``config``: this node's resolved config, which must be
    the run's."""
    deadline = time.monotonic() + timeout
    announced = False
    root = runs_root(home)
    while True:
        now = time.time()
        paths = [root / run_id] if run_id else sorted(root.glob("*"), reverse=True) if root.is_dir() else []
        for path in paths:
            try:
                status = json.loads((path / STATUS_FILE).read_text())
            except (OSError, ValueError):
                continue
            if not isinstance(status, dict) or status.get("master") != rendezvous.master \
                    or status.get("nnodes") != rendezvous.nnodes or status.get("state") not in ("queued", "running") \
                    or not _fresh(status, now):
                continue
            run = RunDir(path)
            if config is not None:
                difference = _first_difference(dict(config), run.read_config())
                if difference:
                    raise UserError(f"node 0's run {run.run_id} (--master {rendezvous.master}) has another config: "
                                    f"{difference}", key="--set",
                                    hint="give every node the same preset and --set overrides")
            return run
        if time.monotonic() >= deadline:
            what = f"run {run_id}" if run_id else "a run"
            raise UserError(f"node 0 started no {what} with --master {rendezvous.master} --nnodes "
                            f"{rendezvous.nnodes} in {root} within {timeout:.0f} s",
                            hint="start node 0 (--node-rank 0) with the same LOWRANK_HOME, on a filesystem both see")
        if not announced and say is not None:
            say(f"node {rendezvous.node_rank}: waiting for node 0's run (--master {rendezvous.master}) in {root}")
            announced = True
        time.sleep(POLL_S)


def join(run: RunDir, rendezvous: Rendezvous, *, nproc: int, resume: bool = False, gpus: list[int] | None = None,
         python: str = sys.executable, extra_env: Mapping[str, str] | None = None) -> subprocess.Popen:
    """Start this node's torchrun for ``run`` (node rank > 0) in its own session; nothing is
    written but ``output.node<R>.log``. Returns the agent's process (the caller waits for it)."""
    from console.backends.local import worker_command, worker_environment

    env = worker_environment(run, gpus, extra_env)
    command = worker_command(run, resume=resume, python=python, nproc=nproc, rendezvous=rendezvous)
    with open(run.file(rendezvous.log_name()), "ab") as log:
        log.write(f"\n=== {now_iso()} node {rendezvous.node_rank}/{rendezvous.nnodes} on {socket.gethostname()} "
                  f"(pid {os.getpid()}): {' '.join(command)}\n".encode())
        log.flush()
        return subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True, close_fds=True, env=env)
