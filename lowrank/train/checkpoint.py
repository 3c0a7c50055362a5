"""Checkpoints and RNG state: atomic saves, seeding, and the RNG snapshot that makes resume exact."""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import UserError
from ..rundir import atomic_replace


def seed_everything(seed: int, deterministic: bool) -> None:
    """Seed python, numpy and torch; optionally ask torch for deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def rng_state() -> dict[str, Any]:
    """Every RNG the loop draws from, for exact resume, as tensors and plain numbers.

    Plain types only, so the checkpoint loads with ``weights_only=True``: numpy's
    Mersenne-Twister keys and python's 625 state words become int64 tensors (one record each
    in the checkpoint: as a list, python's words cost torch.save 625 pickled objects).
    """
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python": [version, torch.tensor(internal, dtype=torch.int64), gauss],
             "numpy": {"kind": str(kind), "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured (CUDA states only when CUDA is visible).

    Also accepts checkpoints written before RNG state was stored in plain types, and those
    that kept python's state words as a list.
    """
    version, internal, gauss = state["python"]
    words = internal.tolist() if isinstance(internal, torch.Tensor) else internal
    random.setstate((version, tuple(words), gauss))
    saved = state["numpy"]
    if isinstance(saved, dict):
        keys = saved["keys"]
        keys = keys.numpy() if isinstance(keys, torch.Tensor) else np.asarray(keys)
        saved = (saved["kind"], keys.astype(np.uint32), saved["pos"], saved["has_gauss"], saved["cached_gaussian"])
    np.random.set_state(saved)
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def atomic_save(obj: Any, path: Path) -> None:
    """torch.save through :func:`lowrank.rundir.atomic_replace`: a kill never leaves half a
    checkpoint, and the temporary name is unpredictable (no planted symlink is followed)."""
    with atomic_replace(path) as handle:
        torch.save(obj, handle)


def load_checkpoint(path: Path, map_location: Any) -> dict[str, Any]:
    """A run's own checkpoint, loaded weights-only like every other file (see lowrank.safeload)."""
    from ..safeload import load_file

    state = load_file(path, what="checkpoint to resume from", map_location=map_location,
                      hint="relaunch without --resume to train a fresh copy")
    if not isinstance(state, dict) or not {"model", "epoch", "rng"} <= set(state):
        raise UserError("the checkpoint to resume from is not a lowrank training checkpoint "
                        "(needs model, epoch and rng)", file=str(path),
                        hint="relaunch without --resume to train a fresh copy")
    return state
