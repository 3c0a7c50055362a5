"""Reading ``.pt`` files without executing them: the one place that calls ``torch.load``.

A checkpoint is a pickle, and a pickle can run any code when loaded. Teachers and
pretrained weights routinely come from other people (research notes, 22 Nov 2018), and a
run directory may be writable by others, so every load here is ``weights_only=True``
(torch's restricted unpickler: tensors, containers, numbers, strings) with no fallback.
Our own checkpoints store their RNG state as tensors and plain lists
(:mod:`lowrank.train.checkpoint`); checkpoints written before that carry numpy's
Mersenne-Twister state, so the few numpy types that state needs (an array of a numpy
dtype) are allowed, scoped to these loads only - the torch documentation's recipe.

A refused or unreadable file is one :class:`~lowrank.errors.UserError` naming the file
and why (not a PyTorch file, truncated, or carrying code / objects other than weights).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from .errors import UserError


def _numpy_allow_list() -> list[Any]:
    """numpy globals an old checkpoint's ``np.random.get_state()`` needs (ndarray of uint32)."""
    import numpy as np

    core = getattr(np, "_core", None) or np.core
    allowed: list[Any] = [core.multiarray._reconstruct, np.ndarray, np.dtype]
    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None:  # numpy >= 1.25 pickles dtypes through their classes
        allowed += [dtypes.UInt32DType, dtypes.Float64DType, dtypes.Int64DType]
    return allowed


def _refusal(text: str) -> str | None:
    """The offending global of a weights-only refusal (``GLOBAL builtins.exec``), else None."""
    match = re.search(r"unsupported global:? (?:GLOBAL )?([\w.]+)", text, re.IGNORECASE)
    return f"global {match.group(1)}" if match else None


def _why(error: BaseException) -> tuple[str, str]:
    """A one-line reason for a failed load, in the user's terms, and a hint."""
    text = str(error).strip()
    first = (text.splitlines()[0] if text else type(error).__name__)[:200]
    refused = _refusal(text)
    if refused is not None:
        return (f"refused: the file holds code or objects other than weights ({refused}); nothing in it was run",
                "lowrank loads only tensors and plain containers; re-save it as torch.save(model.state_dict(), path)")
    if isinstance(error, OSError) and not isinstance(error, EOFError):
        return f"cannot open it ({first})", "check the path and its permissions"
    if "Unsupported operand" in text:  # garbage bytes, or pickle opcodes the safe loader never runs
        first = text.split("Unsupported operand")[1].split("\n")[0].strip()
        first = f"pickle opcode {first} refused"
    return (f"not a PyTorch checkpoint, or truncated ({type(error).__name__}: {first})",
            "give a file written by torch.save (a state dict, or a checkpoint saved by lowrank)")


def load_file(path: str | Path, *, what: str = "checkpoint", map_location: Any = "cpu",
              key: str | None = None, hint: str | None = None) -> Any:
    """The contents of the ``.pt`` file ``path``, loaded with ``weights_only=True``.

    ``what`` names the file in the error ("teacher weights", "checkpoint to resume
    from"); a missing, unreadable, foreign or refused file raises one UserError.
    """
    import torch

    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"{what} file not found", file=str(path), key=key,
                        hint=hint or "give the path of a local .pt file; nothing is downloaded")
    try:
        with torch.serialization.safe_globals(_numpy_allow_list()):
            return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # noqa: BLE001 - any failure is the file's, reported in one line
        reason, default_hint = _why(error)
        raise UserError(f"cannot read {what}: {reason}", file=str(path), key=key, hint=hint or default_hint) from None
