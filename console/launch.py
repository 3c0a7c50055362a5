"""Old import path of the local launcher and the run record's helpers.

The code now lives in its layers: :mod:`console.runs` (the store: status lock, process
identity, relaunch) and :mod:`console.backends.local` (start and kill on this host).
Nothing in ``console/`` imports this module; it is kept for scripts and tests written
against the old path.
"""

from console.backends.base import KillReport  # noqa: F401
from console.backends.local import (NVML_WAIT_SECONDS, WORKER_ENV, WORKER_MODULE, kill_run, run_processes,  # noqa: F401
                                    start_worker, worker_command)
from console.runs import (CREATE_TIME_TOLERANCE, RUN_ENV, locked_status, marked_processes, relaunch,  # noqa: F401
                          worker_process)

__all__ = ["KillReport", "NVML_WAIT_SECONDS", "WORKER_ENV", "WORKER_MODULE", "kill_run", "run_processes", "start_worker",
           "worker_command", "CREATE_TIME_TOLERANCE", "RUN_ENV", "locked_status", "marked_processes", "relaunch",
           "worker_process"]
