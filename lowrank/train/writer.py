"""Checkpoints written to disk in the background, in order, while training goes on.

Serialising a checkpoint (``torch.save``) snapshots the live tensors, so it happens in the
training thread; writing the bytes, fsyncing them and renaming them into place is disk time
the loop need not wait for (on a GPU an epoch of ResNet-9 takes seconds and its checkpoint
tens of megabytes). :class:`CheckpointWriter` runs those writes in one background thread,
first in first out; the loop waits for them where it needs them on disk: before it stops
(a signal, a pruned trial) and before the run is called finished. A process killed meanwhile
leaves the previous checkpoint whole (the rename is atomic): it resumes from there, as if it
had been killed just before the save.
"""

from __future__ import annotations

import io
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

import torch

from ..rundir import atomic_replace


def serialize(obj: Any) -> memoryview:
    """``torch.save`` into memory: a snapshot of the tensors as they are now."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getbuffer()


def write_atomically(data: memoryview, path: Path, sync_dir: bool = True) -> None:
    """The bytes of a serialised checkpoint to ``path`` through rundir.atomic_replace."""
    with atomic_replace(path, sync_dir=sync_dir) as handle:
        handle.write(data)


class CheckpointWriter:
    """One background thread that runs write tasks in submission order, one at a time.

    A task is submitted only once the one before it is done: at most one checkpoint is being
    written while the next is serialised (memory stays bounded when the disk is slower than an
    epoch), and a write that failed fails the run at the next checkpoint, as a write in the
    loop did, not at the end of a run that went on without checkpoints.
    """

    def __init__(self) -> None:
        self._pool: ThreadPoolExecutor | None = None
        self._last: Future | None = None

    def submit(self, task: Callable[[], None]) -> None:
        """Run ``task`` once every task submitted before it is done; raises an earlier one's error."""
        self.wait()
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lowrank-checkpoint")
        self._last = self._pool.submit(task)

    def wait(self) -> None:
        """Block until every submitted task is done; raises the error of the one that failed."""
        last, self._last = self._last, None
        if last is not None:
            last.result()

    def close(self) -> None:
        """Finish the pending write (after an error too, without raising over it) and stop."""
        if self._last is not None:
            self._last.exception()  # waits; an error here is secondary to the one being raised
            self._last = None
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
