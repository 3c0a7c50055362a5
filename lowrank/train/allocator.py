"""glibc malloc settings for the training process: freed activations stay in the heap.

With glibc's defaults a training step on the CPU can pay for its activations twice: blocks
above the mmap threshold (128 KiB at start, raised to the largest mmapped block freed so far)
are mmapped and unmapped on every allocation, and once a step frees its activations the free
space at the top of the heap exceeds the trim threshold (twice the mmap threshold) and is
returned to the kernel, to be page-faulted back in the next step. Measured on the quickstart
(2-core VM, `benchmarks/overhead.py`): whole runs differed by up to +-10 % depending on what
else the process had allocated and freed before. PyTorch's CPU tuning guides answer this by
preloading jemalloc or tcmalloc; this module gets the same effect from glibc itself with two
``mallopt`` calls, fixed values (which also turn off glibc's dynamic adjustment):

* ``M_MMAP_THRESHOLD`` = 32 MiB, glibc's own upper limit on 64-bit: blocks below it come from
  the heap, where they are reused from step to step;
* ``M_TRIM_THRESHOLD`` = 64 MiB: twice that, what glibc's dynamic rule would settle at; free
  space at the top of the heap is kept up to this size instead of unmapped every step.

Only on Linux with glibc, and not when jemalloc or tcmalloc is preloaded (they manage memory
themselves). The settings cost at most that much retained free memory per malloc arena.
"""

from __future__ import annotations

import ctypes
import os
import platform
from typing import Any

M_TRIM_THRESHOLD = -1  # <malloc.h>
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 1024 * 1024  # DEFAULT_MMAP_THRESHOLD_MAX on 64-bit glibc
TRIM_THRESHOLD = 2 * MMAP_THRESHOLD

_applied: dict[str, Any] | None = None


def tune_cpu_allocator() -> dict[str, Any]:
    """Apply the settings once per process; returns what was done (for the run's provenance)."""
    global _applied
    if _applied is not None:
        return _applied
    preloaded = os.environ.get("LD_PRELOAD", "")
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        _applied = {"malloc": "default (not glibc)"}
    elif "jemalloc" in preloaded or "tcmalloc" in preloaded:
        _applied = {"malloc": "default (preloaded allocator)"}
    else:
        mallopt = ctypes.CDLL(None).mallopt
        mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
        # mallopt returns 1 on success
        done = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
        _applied = {"malloc": f"glibc mmap_threshold={MMAP_THRESHOLD} trim_threshold={TRIM_THRESHOLD}"
                    if done else "default (mallopt refused)"}
    return _applied
