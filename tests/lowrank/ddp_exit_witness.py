"""One torchrun rank of a run, started as ``python -m lowrank.train RUN_DIR`` is, with witnesses.

``python -m torch.distributed.run ... tests/lowrank/ddp_exit_witness.py RUN_DIR OUT``: writes
``OUT.atexit.RANK`` from an exit handler, and ``OUT.teardown.RANK`` -- the names of the threads
alive then -- if the interpreter is torn down (a module global's finaliser); used by
test_distributed (a rank never tears down its interpreter while gloo threads run).
"""

import atexit
import os
import runpy
import sys

OUT, RANK = sys.argv[2], os.environ.get("RANK", "?")


class TeardownWitness:
    # builtins and globals may be gone when this runs: everything it uses is bound here
    def __del__(self, _open=open, _listdir=os.listdir, _sorted=sorted, _path=f"{OUT}.teardown.{RANK}") -> None:
        names = _sorted(_open(f"/proc/self/task/{tid}/comm").read().strip() for tid in _listdir("/proc/self/task"))
        with _open(_path, "w") as handle:
            handle.write(" ".join(names))


WITNESS = TeardownWitness()
atexit.register(lambda: open(f"{OUT}.atexit.{RANK}", "w").close())
sys.argv = ["lowrank.train", sys.argv[1]]
runpy.run_module("lowrank.train", run_name="__main__", alter_sys=True)
