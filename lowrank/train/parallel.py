"""The loop's data-parallel pieces: what a W-rank run does differently from one process.

- :func:`check_config` refuses, before training, what the ranks cannot do together (a global
  batch that does not split, imitation's adapters and Bayesian layers, which are not wired for it).
- :class:`FollowerRun`: a rank other than 0 sees the run directory read-only (rank 0 alone writes
  metrics, status, checkpoints and the results row).
- :class:`LockstepStop`: the per-step stop check agreed by all ranks (a signal to any rank stops
  every rank at the same step, so no rank waits forever in a gradient all-reduce, and the stop
  checkpoint is one consistent state); :func:`rank_states` gives each rank its RNG back on resume.
- :func:`wrap`: ``DistributedDataParallel`` around the student (BatchNorm synchronised first when
  ``train.sync_bn``); :func:`sync_buffers` gives every rank rank 0's buffers before evaluating.
- :func:`process_facts`: the status fields naming the run's processes (pid, world size, rank pids,
  the nodes and which ranks each runs).
"""

from __future__ import annotations

import os
import signal
import socket
from typing import Any

import torch
import torch.nn as nn

from ..distributed import Solo
from ..errors import UserError
from .stop import StopFlag, StopRequested


def check_config(config: Any, world: int, train_size: int | None = None) -> None:
    """Refuse a data-parallel config the worker cannot train exactly (UserError with key and hint)."""
    if world <= 1:
        return
    from .shard import check_split

    check_split(config.data.batch_size, world, train_size if train_size is not None else 0)
    if config.imitation is not None:
        raise UserError(f"imitation stages are not supported with {world} data-parallel ranks (their adapters "
                        "live outside the wrapped model)", key="resources.nproc", hint="run imitation with nproc 1")
    if config.bayes is not None:
        raise UserError(f"bayes: (Bayesian compression) is not supported with {world} data-parallel ranks",
                        key="resources.nproc", hint="run it with nproc 1")


class FollowerRun:
    """A non-zero rank's view of a :class:`~lowrank.rundir.RunDir`: reads pass through, writes are dropped."""

    def __init__(self, run: Any) -> None:
        self._run = run

    def __getattr__(self, name: str) -> Any:
        return getattr(self._run, name)

    def append_metric(self, record: dict[str, Any], sync: bool | None = None) -> None:
        """Rank 0 writes metrics.jsonl; the others' figures are already in its (reduced) lines."""

    def update_status(self, **fields: Any) -> dict[str, Any]:
        """Rank 0 writes status.json."""
        return {}


class LockstepStop:
    """A stop flag checked collectively: every rank sees the stop at the same step (and so writes
    its share of the stop checkpoint there), though the signal may have reached only one rank."""

    def __init__(self, stop: StopFlag, group: Solo) -> None:
        self.stop, self.group = stop, group
        self.agreed = False

    @property
    def signum(self) -> int | None:
        return self.stop.signum

    def requested(self) -> bool:
        """Whether any rank was signalled: one host-side all-reduce of a flag (gloo, even under
        NCCL: no device sync); once true it stays true without asking again."""
        if not self.agreed:
            self.agreed = self.group.any(self.stop.signum is not None)
        return self.agreed

    def check(self) -> None:
        """Raise :class:`StopRequested` on every rank once any rank was signalled."""
        if self.requested():
            raise StopRequested(self.stop.signum or signal.SIGTERM)


def rank_states(state: dict[str, Any], group: Solo, say: Any = print) -> dict[str, Any]:
    """A checkpoint as this rank resumes it: its own RNG states (``rng``, and the mid-epoch
    ``epoch_rng``) from the per-rank lists a W-rank run saves; rank 0's when the world size changed."""
    ranks, epoch_ranks = state.get("rng_ranks"), state.get("epoch_rng_ranks")
    if not group.distributed or ranks is None:
        return state
    if len(ranks) != group.world_size:
        say(f"warning: the checkpoint holds the RNG states of {len(ranks)} ranks and this run has "
            f"{group.world_size}: the resumed run is not bit-exact", flush=True)
        return state
    state = {**state, "rng": ranks[group.rank]}
    if state.get("mid_epoch") and epoch_ranks is not None:
        state["mid_epoch"] = {**state["mid_epoch"], "epoch_rng": epoch_ranks[group.rank]}
    return state


def wrap(model: nn.Module, group: Solo, device: torch.device, aux_weight: float = 0.0) -> nn.Module:
    """``model`` in ``DistributedDataParallel`` (it broadcasts rank 0's weights and buffers now).

    An auxiliary head the objective ignores (``train.aux_weight`` 0) gets no gradient: DDP must
    then look for unused parameters every step, so it is told to only in that case."""
    from torch.nn.parallel import DistributedDataParallel

    unused = bool(getattr(model, "auxiliary", False)) and not aux_weight
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                   find_unused_parameters=unused)


def sync_buffers(model: nn.Module, group: Solo) -> None:
    """Every rank gets rank 0's buffers (BatchNorm running statistics without ``sync_bn``), so the
    sharded evaluation measures exactly the model rank 0 checkpoints."""
    if not group.distributed:
        return
    import torch.distributed as dist

    for buffer in model.buffers():
        dist.broadcast(buffer, src=0)


def process_facts(group: Solo) -> dict[str, Any]:
    """Status fields for the run's processes: ``pid``/``pgid`` of what the launcher started (the
    worker itself, or torchrun's agent, its ranks' parent), and with W ranks ``world_size``,
    ``launcher``, ``rank_pids``, ``rank_hosts`` and ``nodes`` (gathered: every rank must call this).

    ``nodes`` lists every node of the run in node-rank order: its name (Slurm's node name, else
    the hostname), host, node rank, torchrun agent's pid (None without torchrun), and its ranks
    and their pids. Under Slurm (``LOWRANK_LAUNCHER=slurm``) the job's task on the first node
    recorded ``pid``; rank 0's agent may be on another node, so it is not made the run's pid.
    Ranks whose launchers marked them for different runs (``LOWRANK_RUN_ID``: a node that joined
    a stale run at the same rendezvous) all refuse to train (UserError)."""
    if not group.distributed:
        return {"pid": os.getpid(), "pgid": os.getpgid(0)}
    torchrun = group.env.launcher == "torchrun"
    host = socket.gethostname()
    me = {"rank": group.rank, "pid": os.getpid(), "host": host, "node": os.environ.get("SLURMD_NODENAME") or host,
          "node_rank": int(os.environ.get("GROUP_RANK") or 0) if torchrun else None,
          "agent_pid": os.getppid() if torchrun else None}
    me["run_id"] = os.environ.get("LOWRANK_RUN_ID")  # the launchers' mark of the run
    ranks = group.gather(me)
    runs = {rank["run_id"] for rank in ranks if rank["run_id"]}
    if len(runs) > 1:  # a node joined another run at the same rendezvous (a stale one): no rank may train
        mine = [rank["rank"] for rank in ranks if rank["run_id"] != ranks[0]["run_id"]]
        raise UserError(f"the ranks belong to different runs ({', '.join(sorted(runs))}): rank(s) "
                        f"{', '.join(map(str, mine))} joined the rendezvous of rank 0's run {ranks[0]['run_id']}",
                        key="--master", hint="start every node for the same run (one rendezvous address and port "
                                             "per run)")
    nodes: dict[Any, dict[str, Any]] = {}
    for rank in ranks:
        key = (rank["node_rank"], rank["node"]) if torchrun else (None, rank["node"])
        entry = nodes.setdefault(key, {"node": rank["node"], "host": rank["host"], "node_rank": rank["node_rank"],
                                       "agent_pid": rank["agent_pid"], "ranks": [], "pids": []})
        entry["ranks"].append(rank["rank"])
        entry["pids"].append(rank["pid"])
    listed = sorted(nodes.values(), key=lambda node: (node["node_rank"] if node["node_rank"] is not None else 0,
                                                      node["ranks"][0]))
    if not torchrun:
        for index, node in enumerate(listed):
            node["node_rank"] = index
    facts: dict[str, Any] = {"world_size": group.world_size, "launcher": group.env.launcher,
                             "rank_pids": [rank["pid"] for rank in ranks],
                             "rank_hosts": [rank["host"] for rank in ranks], "nnodes": len(listed), "nodes": listed}
    if torchrun and os.environ.get("LOWRANK_LAUNCHER") != "slurm":  # the launcher started the agent: its pid
        agent = os.getppid()                                           # stays the run's pid
        facts.update(pid=agent, pgid=os.getpgid(agent))
    return facts
