"""The process group of a data-parallel run: one worker process per rank, started by ``torchrun``.

``torchrun`` (``python -m torch.distributed.run``) -- or Slurm with the same variables --
gives every rank ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` (and ``MASTER_ADDR``/``MASTER_PORT``
or its own rendezvous store); :func:`read_env` reads them and :func:`connect` joins the group:
gloo when the run trains on the CPU, NCCL on CUDA with device ``cuda:LOCAL_RANK`` of the visible
devices. Nothing here assumes ``--standalone``: the rendezvous is whatever the environment says.

World size 1 (no ``WORLD_SIZE``, or 1) is no process group at all: :data:`SOLO`, whose
collectives return their input, so a single-process run takes exactly today's path.

The loop needs only a few collectives, all here: sums of metric tensors (:meth:`Group.sum`),
"did any rank ...?" flags (:meth:`Group.any`, on a gloo group even under NCCL so a per-step
stop check never waits for the GPU), objects gathered or broadcast from rank 0 (pids, RNG
states, a pruner's decision) and a barrier. Rank 0 alone writes the run directory.
"""

from __future__ import annotations

import atexit
import dataclasses
import datetime
import os
import sys
from typing import Any, NoReturn

from .errors import UserError

TIMEOUT_MINUTES = 30  # a collective that waits longer than this fails the run (a rank hung or died)


@dataclasses.dataclass(frozen=True)
class RankEnv:
    """This process's place in the run, as the launcher's environment states it."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    launcher: str | None = None  # "torchrun" when torchrun's elastic agent started this process

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes the run directory."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def _int_env(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value in (None, ""):
        return default
    try:
        return int(value)
    except ValueError:
        raise UserError(f"the environment variable {name}={value!r} is not an integer",
                        key=name, hint="let torchrun (or Slurm) set the distributed environment") from None


def read_env() -> RankEnv:
    """RANK / WORLD_SIZE / LOCAL_RANK from the environment (defaults: a single process)."""
    world = _int_env("WORLD_SIZE", 1)
    rank = _int_env("RANK", 0)
    local = _int_env("LOCAL_RANK", rank if world > 1 else 0)
    if world < 1 or not 0 <= rank < world or local < 0:
        raise UserError(f"inconsistent distributed environment: RANK={rank} WORLD_SIZE={world} LOCAL_RANK={local}",
                        key="RANK", hint="start data-parallel runs with torchrun (lowrank run --nproc N)")
    launcher = "torchrun" if os.environ.get("TORCHELASTIC_RUN_ID") else ("env" if world > 1 else None)
    return RankEnv(rank, world, local, launcher)


class Solo:
    """World size 1: every collective is the identity, nothing is initialised."""

    env = RankEnv()
    rank, world_size, is_main, distributed = 0, 1, True, False

    def sum(self, tensor: Any) -> Any:
        """The tensor summed over ranks (here: itself)."""
        return tensor

    def any(self, flag: bool) -> bool:
        """Whether any rank says ``flag`` (here: this one)."""
        return bool(flag)

    def max_int(self, value: int) -> int:
        return int(value)

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order."""
        return [obj]

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank."""
        return obj

    def barrier(self) -> None:
        """Wait for every rank."""

    def close(self) -> None:
        """Leave the process group."""


SOLO = Solo()


class Group(Solo):
    """The initialised default process group (+ a gloo group for host-side flags under NCCL)."""

    joined = False  # set once this process has joined a group: see exit_process

    def __init__(self, env: RankEnv, device: Any) -> None:
        import torch
        import torch.distributed as dist

        Group.joined = True  # before init: a failed init can have started threads too
        self.env = env
        self.rank, self.world_size, self.is_main, self.distributed = env.rank, env.world_size, env.is_main, True
        self.device = device
        timeout = datetime.timedelta(minutes=TIMEOUT_MINUTES)
        try:
            if device.type == "cuda":
                torch.cuda.set_device(device)
                dist.init_process_group("nccl", timeout=timeout, device_id=device)
                self._host = dist.new_group(backend="gloo", timeout=timeout)  # flags and objects stay on the host
            else:
                dist.init_process_group("gloo", timeout=timeout)
                self._host = None  # the default group is gloo already
        except ValueError as error:  # env:// without MASTER_ADDR/MASTER_PORT: started by hand with WORLD_SIZE set
            raise UserError(f"cannot join the process group of {env.world_size} ranks: {error}", key="MASTER_ADDR",
                            hint="start data-parallel runs with torchrun (lowrank run --nproc N), which sets "
                                 "the rendezvous") from None
        self._dist = dist

    def sum(self, tensor: Any) -> Any:
        """``tensor`` summed over ranks (a new tensor; NaN on any rank makes the sum NaN)."""
        out = tensor.clone()
        self._dist.all_reduce(out, op=self._dist.ReduceOp.SUM)
        return out

    def max_int(self, value: int) -> int:
        """The largest ``value`` any rank holds (host side: no device sync)."""
        import torch

        flag = torch.tensor([int(value)], dtype=torch.int64)
        self._dist.all_reduce(flag, op=self._dist.ReduceOp.MAX, group=self._host)
        return int(flag.item())

    def any(self, flag: bool) -> bool:
        return self.max_int(1 if flag else 0) > 0

    def gather(self, obj: Any) -> list[Any]:
        out: list[Any] = [None] * self.world_size
        self._dist.all_gather_object(out, obj, group=self._host)
        return out

    def broadcast(self, obj: Any) -> Any:
        box = [obj]
        self._dist.broadcast_object_list(box, src=0, group=self._host)
        return box[0]

    def barrier(self) -> None:
        self._dist.barrier(group=self._host)

    def close(self) -> None:
        if self._dist.is_initialized():
            self._dist.destroy_process_group()


def connect(env: RankEnv, device_type: str) -> Solo:
    """Join the run's process group (:data:`SOLO` for world size 1); returns it with its device.

    ``device_type`` is where the run trains (``cpu`` -> gloo, ``cuda`` -> NCCL on ``LOCAL_RANK``).
    """
    if not env.distributed:
        return SOLO
    import torch

    if device_type == "cuda":
        count = torch.cuda.device_count()
        if env.local_rank >= count:
            raise UserError(f"rank {env.rank} has LOCAL_RANK {env.local_rank} but only {count} CUDA device(s) "
                            f"are visible", key="resources.nproc",
                            hint="give the run one GPU per rank (CUDA_VISIBLE_DEVICES), or --cpu")
        device = torch.device("cuda", env.local_rank)
    else:
        device = torch.device(device_type)
    return Group(env, device)


def exit_process(code: int) -> NoReturn:
    """End this process with ``code``; a rank that joined a process group skips interpreter teardown.

    Once DDP has wrapped a model, torch keeps the process group -- and its gloo threads
    (``pt_gloo_runloop``, ``gloo_tcp_loop``) -- alive after ``destroy_process_group``: C++
    still holds it. Those threads then run while Python finalises and C++ destroys its
    statics, and now and then that ends in ``terminate called without an active exception``
    (SIGABRT) after the run has finished; torchrun reports the rank as failed and stops the
    others, possibly while rank 0 still writes its results (CI, 5 Dec 2026; 2 of ~420 exits
    of a bare 2-rank DDP script on the 2-core VM).
    So such a rank runs Python's exit handlers, flushes stdout/stderr and leaves with
    ``os._exit``: everything the run owns is written and closed before this point.
    A process that never joined a group exits normally.
    """
    if not Group.joined:
        sys.exit(code)
    atexit._run_exitfuncs()  # what a normal exit runs first (multiprocessing, logging, compile workers)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError, AttributeError):  # closed or replaced: nothing left to flush
            pass
    os._exit(code)


def rank_seed(seed: int, rank: int) -> int:
    """The seed of rank ``rank``'s own random draws (augmentation, dropout): rank 0 keeps ``seed``."""
    return seed + 1_000_033 * rank
