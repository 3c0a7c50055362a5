"""Sharding a data-parallel run's batches: each rank takes its slice of every *global* batch.

``data.batch_size`` is the global batch. The loader draws the same order as a single process
(the same seeded sampler, the same per-epoch seed), cuts it into global batches of
``batch_size``, and rank ``r`` of ``W`` keeps the ``r``-th contiguous slice of each (sizes
differ by at most one when a batch does not split evenly, e.g. the last one). So the ranks
together see exactly the single-process run's batches - no padding and no dropped samples,
unlike ``DistributedSampler`` - which is what makes a W-rank run equal a 1-process run, and a
resumed run equal an uninterrupted one. Evaluation loaders are sharded the same way and their
sums reduced.
"""

from __future__ import annotations

from typing import Iterator, Sequence

from torch.utils.data import Sampler

from ..errors import UserError


def shard_bounds(length: int, rank: int, world: int) -> tuple[int, int]:
    """[start, stop) of rank ``rank``'s slice of a batch of ``length`` items."""
    base, extra = divmod(length, world)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


def shard(batch: Sequence[int], rank: int, world: int) -> Sequence[int]:
    """Rank ``rank``'s slice of ``batch`` (the whole batch when ``world`` is 1)."""
    start, stop = shard_bounds(len(batch), rank, world)
    return batch[start:stop]


class ShardedBatches(Sampler[list[int]]):
    """A batch sampler yielding this rank's slice of each batch of ``batches``; empty slices skipped."""

    def __init__(self, batches: Sampler[list[int]], rank: int, world: int) -> None:
        self.batches, self.rank, self.world = batches, rank, world

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self.batches:
            part = shard(batch, self.rank, self.world)
            if len(part):
                yield list(part)

    def __len__(self) -> int:
        return len(self.batches)


def check_split(batch_size: int, world: int, train_size: int) -> None:
    """Refuse a global batch the ranks cannot share exactly (a UserError the user can act on)."""
    if world <= 1:
        return
    if batch_size % world:
        raise UserError(f"data.batch_size {batch_size} is the global batch and does not split over {world} ranks",
                        key="data.batch_size",
                        hint=f"use a multiple of {world} (e.g. {max(world, batch_size // world * world)}), "
                             f"or change resources.nproc")
    last = train_size % batch_size
    if 0 < last < world:
        raise UserError(f"the last training batch has {last} image(s) ({train_size} % {batch_size}), fewer than the "
                        f"{world} ranks: some rank would train on an empty batch", key="data.batch_size",
                        hint="choose a batch size whose remainder is 0 or at least the number of ranks")
