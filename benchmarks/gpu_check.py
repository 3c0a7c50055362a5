"""One-command check of the console's GPU path on a CUDA host: ``python benchmarks/gpu_check.py``.

What it verifies, with a real worker (tiny convnet, synthetic data, 2 DataLoader workers)
in a temporary LOWRANK_HOME:

1. NVML works: every GPU's name, memory, utilisation, temperature and power are read.
2. Pinning: the run is given a free GPU by the scheduler's planner; NVML then lists the
   worker's pid on that GPU only (CUDA_DEVICE_ORDER=PCI_BUS_ID makes CUDA's index NVML's;
   no stray context on GPU 0 -- research notes, 28 Nov 2017).
3. Mapping: the GPU process is attributed to the run id (``lowrank gpus`` shows it).
4. Kill: ``kill_run`` leaves no process, and NVML confirms the pids left the GPU and the
   memory came back (the "process gone but memory still full" symptom of the notes).

Prints one line per check and a JSON summary; exit status 0 only if every check passed.
On a machine without a GPU it says so and exits 2.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    home = Path(tempfile.mkdtemp(prefix="lowrank-gpu-check-"))
    os.environ["LOWRANK_HOME"] = str(home)
    os.environ.pop("LOWRANK_WORKER", None)
    from console.gpus import snapshot

    results: dict[str, object] = {"home": str(home)}
    ok = True

    def check(name: str, passed: bool, detail: str = "") -> None:
        nonlocal ok
        ok &= bool(passed)
        results[name] = {"passed": bool(passed), "detail": detail}
        print(f"[{'PASS' if passed else 'FAIL'}] {name}: {detail}", flush=True)

    before = snapshot(pid_to_run={}, cpu_interval=0.2)
    results["snapshot"] = before.to_dict()
    if not before.gpus:
        print(f"no GPU on this machine: {before.nvml_error}", flush=True)
        print(json.dumps(results, indent=2, default=str))
        return 2
    check("nvml", all(g.memory_total_mb > 0 for g in before.gpus),
          "; ".join(f"{g.index}: {g.name} {g.memory_used_mb:.0f}/{g.memory_total_mb:.0f} MiB util {g.utilization_pct}% "
                    f"{g.temperature_c}C {g.power_w}W" for g in before.gpus))

    from lowrank.config import validate
    from lowrank.rundir import RunDir

    from console.launch import kill_run, start_worker
    from console.runs import RunStore

    config = validate({"name": "gpu-check", "model": {"name": "tiny_convnet", "kwargs": {"width": 64}},
                       "data": {"name": "synthetic", "batch_size": 64, "workers": 2,
                                "kwargs": {"num_train": 20000, "num_val": 256, "num_test": 256}},
                       "train": {"epochs": 1000, "device": "cuda", "seed": 0},
                       "log": {"checkpoint_every": 1000}}).to_dict()
    run = RunDir.create(config, home=home)
    start_worker(run)  # gpus=None: the planner picks a free GPU
    status = run.read_status()
    assigned = status.get("gpus") or []
    check("assigned", len(assigned) == 1, f"GPU {assigned}")
    worker_pid = status["pid"]

    deadline, seen = time.time() + 180, None
    while time.time() < deadline:
        snap = snapshot(RunStore(home).pid_map())
        on = [g.index for g in snap.gpus if any(p.pid == worker_pid for p in g.processes)]
        if on:
            seen = snap
            break
        if run.read_status().get("state") in ("failed", "finished", "killed"):
            break
        time.sleep(0.5)
    if seen is None:
        grew = [g.index for g, b in zip(snapshot(pid_to_run={}).gpus, before.gpus) if g.memory_used_mb > b.memory_used_mb + 100]
        check("worker on GPU", False, f"NVML never listed pid {worker_pid}; state {run.read_status().get('state')}; "
              f"memory grew on GPUs {grew} (a pid namespace, e.g. a container, hides our pids from NVML); "
              f"see {run.file('output.log')}")
    else:
        on = [g.index for g in seen.gpus if any(p.pid == worker_pid for p in g.processes)]
        check("pinned", on == assigned, f"worker pid {worker_pid} on GPU(s) {on}, assigned {assigned}")
        mapped = [p.run_id for g in seen.gpus for p in g.processes if p.pid == worker_pid]
        check("mapped to run", mapped == [run.run_id], f"{mapped}")
        time.sleep(2.0)  # let it train a little (DataLoader workers up)

    report = kill_run(run, grace=15)
    check("kill leaves no process", not report.survivors, report.message)
    check("NVML: pids left the GPU", report.nvml_checked and not report.gpu_pids_left,
          f"checked={report.nvml_checked} left={report.gpu_pids_left}")
    time.sleep(1.0)
    after = snapshot(pid_to_run={})
    for b, a in zip(before.gpus, after.gpus):
        if b.index in assigned:
            check("memory released", a.memory_used_mb <= b.memory_used_mb + 64,
                  f"GPU {b.index}: {b.memory_used_mb:.0f} MiB before, {a.memory_used_mb:.0f} MiB after")
    results["kill_report"] = report.to_dict()
    results["state"] = run.read_status().get("state")
    print(json.dumps({k: v for k, v in results.items() if k != "snapshot"}, indent=2, default=str))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
