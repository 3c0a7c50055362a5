"""Run the worker (one torchrun rank) with a DDP comm hook that counts gradient all-reduces.

``python -m torch.distributed.run ... tests/lowrank/ddp_comm_counter.py RUN_DIR``: prints
``rank R: all-reduces N`` at the end; used by test_distributed (accumulation steps under no_sync).
"""

import os
import sys

import torch.distributed as dist

from lowrank.distributed import exit_process
from lowrank.train import loop, parallel
from lowrank.train.worker import main

CALLS = [0]
_real_wrap = parallel.wrap


def _counting_wrap(*args, **kwargs):
    ddp = _real_wrap(*args, **kwargs)

    def hook(state, bucket):  # the default all-reduce-and-average, counted
        CALLS[0] += 1
        future = dist.all_reduce(bucket.buffer(), async_op=True).get_future()
        return future.then(lambda done: done.value()[0] / dist.get_world_size())

    ddp.register_comm_hook(None, hook)
    return ddp


loop.wrap = _counting_wrap
code = main([sys.argv[1]])
print(f"rank {os.environ.get('RANK')}: all-reduces {CALLS[0]}", flush=True)
exit_process(code)  # as python -m lowrank.train leaves
