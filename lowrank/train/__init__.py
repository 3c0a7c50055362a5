"""The training worker, as a package: ``python -m lowrank.train RUN_DIR [--resume]``.

  worker.py      entry point: argument parsing, signals, how the run ended (status, results row)
  stop.py        the stop flag the signal handlers set and the loop checks once per step
  loop.py        the epoch/step loop (``train``)
  evaluation.py  loss and top-1/top-5 error over a loader
  checkpoint.py  atomic saves, seeding, RNG state for exact resume
  device.py      ``train.device`` resolution, moving batches
  shard.py       a data-parallel rank's slice of every global batch
  parallel.py    the loop's data-parallel pieces (rank 0 writes, lockstep stop, DDP)

Importing this package is cheap (no torch): the names that need torch are loaded
on first use through ``__getattr__``.
"""

from __future__ import annotations

import importlib
from typing import Any

from .stop import StopFlag, StopRequested, _StopFlag
from .worker import main

# name -> submodule, imported on first access (each of these imports torch)
_LAZY = {
    "train": "loop", "NonFiniteLoss": "loop", "HEARTBEAT_SECONDS": "loop",
    "evaluate": "evaluation", "topk_errors": "evaluation",
    "atomic_save": "checkpoint", "rng_state": "checkpoint", "set_rng_state": "checkpoint",
    "seed_everything": "checkpoint",
    "resolve_device": "device", "to_device": "device",
}

__all__ = ["StopFlag", "StopRequested", "_StopFlag", "main", *_LAZY]


def __getattr__(name: str) -> Any:
    """Resolve a torch-backed name from its submodule the first time it is asked for."""
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
