"""A stand-in worker (``LOWRANK_WORKER``) that records the environment a Slurm task gave it:
``RUN_DIR/env.rank<RANK>.json``; rank 0 then ends the run ``finished`` as the real worker would.
For the multi-task test, where the DDP worker itself is not what is checked."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo, for lowrank.rundir

from lowrank.rundir import RunDir, now_iso  # noqa: E402

KEYS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "LOWRANK_LAUNCHER",
        "LOWRANK_PREEMPT_SIGNAL", "LOWRANK_RUN_ID", "SLURM_JOB_ID", "SLURM_PROCID")


def main() -> int:
    run = RunDir(Path(sys.argv[1]))
    rank = os.environ.get("RANK", "0")
    (run.path / f"env.rank{rank}.json").write_text(json.dumps({key: os.environ.get(key) for key in KEYS}))
    print(f"rank {rank} of {os.environ.get('WORLD_SIZE')}", flush=True)
    if rank == "0":
        run.update_status(state="finished", ended=now_iso(), exit_code=0, pid=os.getpid())
    return 0


if __name__ == "__main__":
    sys.exit(main())
