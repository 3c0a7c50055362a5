"""The GPU check, one command for a CUDA host: ``python benchmarks/gpu_check.py [--out report.json]``.

Writes one JSON report (and prints a line per check) with, in order:

1. NVML panel: every GPU's name, memory, utilisation, temperature, power (what the TUI shows).
2. Pinning: a real worker (tiny convnet, synthetic data, 2 DataLoader workers, a temporary
   LOWRANK_HOME) is given a free GPU by the scheduler's planner and started with
   CUDA_VISIBLE_DEVICES; NVML then lists its pid on that GPU only (CUDA_DEVICE_ORDER=PCI_BUS_ID
   makes CUDA's index NVML's; no stray context on GPU 0 -- research notes, 28 Nov 2017), and the
   GPU process is attributed to the run id.
3. Kill: ``kill_run`` leaves no process and NVML confirms the pids left the GPU and the memory
   came back (the "process gone but memory still full" symptom of the notes).
4. Layer benchmark on CUDA (``lowrank bench layers --device cuda``), incl. ACDC vs nn.Linear at
   N = 4096, batch 128.
5. Training throughput (img/s) and peak memory of WRN-28-10 and ResNet-9 on synthetic
   CIFAR-shaped batches resident on the GPU: fp32, bf16 autocast + channels_last, and that
   plus torch.compile.
6. The latency table of docs/latency.md on CUDA (``benchmarks/latency_table.py``): every method at
   budget 0.1 on the WRN-28-10 and DARTS students, fp32 and bf16, batch 1 and 64, declared vs
   measured ratios to the dense network (printed as Markdown, all figures in the report).
7. Loop overhead: the worker vs a bare loop on ResNet-9 (``benchmarks/overhead.py``).

Budget: about 8 minutes on one GPU (``--quick`` trims the throughput steps and the overhead pairs,
``--skip-compile`` leaves out the compile rows). Exit status 0 if every check passed, 1 if one
failed, 2 on a machine without CUDA: there every CUDA section is recorded as skipped with the
reason, and the report is still written.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def check_pin_and_kill(check: Callable[[str, bool, str], None], results: dict[str, Any], home: Path) -> None:
    """Checks 1-4 of the module docstring: NVML panel, pinning, run mapping, kill frees the GPU."""
    from console.gpus import snapshot

    before = snapshot(pid_to_run={}, cpu_interval=0.2)
    results["snapshot"] = before.to_dict()
    if not before.gpus:
        results["skipped"] = f"no GPU: {before.nvml_error}"
        print(f"no GPU on this machine: {before.nvml_error}", flush=True)
        return
    check("nvml", all(g.memory_total_mb > 0 for g in before.gpus),
          "; ".join(f"{g.index}: {g.name} {g.memory_used_mb:.0f}/{g.memory_total_mb:.0f} MiB util {g.utilization_pct}% "
                    f"{g.temperature_c}C {g.power_w}W" for g in before.gpus))

    from lowrank.config import validate
    from lowrank.rundir import RunDir

    from console.backends.local import kill_run, start_worker
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


def throughput(model: str, kwargs: dict[str, Any], mode: str, device: str = "cuda", batch: int = 128,
               steps: int = 20, warmup: int = 5, image_size: int = 32, classes: int = 10) -> dict[str, Any]:
    """Training img/s of ``model`` on a resident synthetic batch: SGD steps in ``mode``.

    ``mode``: ``fp32``; ``bf16_cl`` (bf16 autocast + channels_last); ``bf16_cl_compile`` (and
    torch.compile). Timed after ``warmup`` steps (compilation included there), with the device
    synchronised at both ends; peak memory is torch.cuda.max_memory_allocated (CUDA only).
    """
    import torch
    import torch.nn.functional as F

    from lowrank.models import create_model

    dev = torch.device(device)
    torch.manual_seed(0)
    net = create_model(model, num_classes=classes, in_channels=3, **kwargs).to(dev)
    images = torch.randn(batch, 3, image_size, image_size, device=dev)
    targets = torch.randint(classes, (batch,), device=dev)
    channels_last = mode.startswith("bf16_cl")
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    step_net = torch.compile(net) if mode.endswith("compile") else net
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    autocast = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=mode != "fp32")

    def step() -> None:
        with autocast:
            loss = F.cross_entropy(step_net(images).float(), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    start = time.perf_counter()
    for _ in range(warmup):
        step()
    sync()
    warm_seconds = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated(dev) / 2**20 if dev.type == "cuda" else None
    return {"model": model, "kwargs": kwargs, "mode": mode, "device": str(dev), "batch": batch, "steps": steps,
            "img_per_s": batch * steps / seconds, "warmup_s": warm_seconds, "peak_memory_mb": peak}


THROUGHPUT_CASES = [("wrn", {"depth": 28, "widen_factor": 10}, 128), ("resnet9", {}, 512)]


def run_sections(cuda: bool, quick: bool, skip_compile: bool, home: Path,
                 check: Callable[[str, bool, str], None], report: dict[str, Any]) -> None:
    """Fill ``report`` section by section; without CUDA each CUDA section records why it was skipped."""
    skip = None if cuda else "no CUDA device visible to torch"
    report["nvml_and_kill"] = section = {}
    try:
        check_pin_and_kill(check, section, home)
    except Exception as error:  # noqa: BLE001 - record and go on: the other sections still tell something
        check("nvml_and_kill", False, f"{type(error).__name__}: {error}")

    if skip:
        report["bench_layers"] = {"skipped": skip}
    else:
        from lowrank.deploy.layers import bench_acdc_linear, bench_layers

        rows = bench_layers([64, 256, 640], [64, 128], device="cuda", hw=32, repeat=5)
        rows += bench_acdc_linear(n=4096, batch=128, device="cuda", repeat=5)
        report["bench_layers"] = {"rows": rows}
        linear = {row["method"]: row for row in rows if row["kind"] == "linear"}
        fast = linear.get("acdc L=1 fast")
        if fast:
            print(f"ACDC L=1 fast vs nn.Linear N=4096 fwd: {1 / fast['fwd_ratio']:.2f}x faster", flush=True)
        check("bench layers on cuda", all("error" not in row for row in rows),
              "; ".join(f"{r['method']}: {r['error']}" for r in rows if "error" in r))

    if skip:
        report["throughput"] = {"skipped": skip}
    else:
        modes = ["fp32", "bf16_cl"] + ([] if skip_compile else ["bf16_cl_compile"])
        rows = []
        for model, kwargs, batch in THROUGHPUT_CASES:
            for mode in modes:
                try:
                    row = throughput(model, kwargs, mode, batch=batch, steps=10 if quick else 30)
                except Exception as error:  # noqa: BLE001
                    row = {"model": model, "mode": mode, "error": f"{type(error).__name__}: {error}"}
                rows.append(row)
                print(f"  {model} {mode}: " + (f"{row['img_per_s']:.0f} img/s, peak {row['peak_memory_mb']:.0f} MiB"
                                               if "error" not in row else row["error"]), flush=True)
        report["throughput"] = {"rows": rows}
        check("throughput", all("error" not in row for row in rows), "")

    if skip:
        report["latency_table"] = {"skipped": skip}
    else:  # the table of docs/latency.md on this GPU, fp32 and bf16 (benchmarks/latency_table.py)
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        import latency_table

        results, problems = [], []
        for preset in ("wrn28_10_student", "darts_student"):
            try:
                result = latency_table.measure_preset(
                    preset, latency_table.PRESETS[preset], None, "cuda", [1], [1, 64], ["float32", "bfloat16"],
                    3 if quick else 7, onnx=False, progress=lambda label: print(f"  {label}", flush=True))
            except Exception as error:  # noqa: BLE001 - record and go on
                problems.append(f"{preset}: {type(error).__name__}: {error}")
                continue
            results.append(result)
        import datetime

        import torch

        from lowrank.deploy.latency import environment

        env = {**environment(torch.device("cuda"), torch.float32), "date": datetime.date.today().isoformat(),
               "repeat": 3 if quick else 7, "argv": "(gpu_check.py)"}
        report["latency_table"] = {"results": results, "markdown": latency_table.markdown(results, env),
                                   "problems": problems}
        print(report["latency_table"]["markdown"], flush=True)
        check("latency table on cuda", not problems, "; ".join(problems))

    if skip:
        report["loop_overhead"] = {"skipped": skip}
    else:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        import overhead

        overrides = ["train.device=cuda", "model.kwargs={width: 64}", "data.batch_size=512", "train.amp=bf16",
                     "train.channels_last=true",
                     "data.kwargs={num_train: 10240, num_val: 1024, num_test: 1024, image_size: 32, channels: 3}"]
        result = overhead.measure("resnet9", overrides, pairs=2 if quick else 3, home=home)
        report["loop_overhead"] = {k: v for k, v in result.items() if k != "rows"}
        check("loop overhead <= 2 %", result["ratio_median"] <= 1.02,
              f"harness / bare {result['ratio_median']:.4f} (min {result['ratio_min']:.4f}, "
              f"max {result['ratio_max']:.4f})")


def main(argv: list[str] | None = None) -> int:
    """Run every section, write the JSON report, and say which checks failed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("gpu_check.json"), help="where the JSON report goes")
    parser.add_argument("--quick", action="store_true", help="fewer throughput steps and overhead pairs")
    parser.add_argument("--skip-compile", action="store_true", help="no torch.compile rows")
    args = parser.parse_args(argv)
    home = Path(tempfile.mkdtemp(prefix="lowrank-gpu-check-"))
    os.environ["LOWRANK_HOME"] = str(home)
    os.environ.pop("LOWRANK_WORKER", None)
    import torch

    cuda = torch.cuda.is_available()
    report: dict[str, Any] = {"home": str(home), "torch": torch.__version__, "cuda": cuda,
                              "device": torch.cuda.get_device_name(0) if cuda else None, "checks": {}}
    failed: list[str] = []

    def check(name: str, passed: bool, detail: str = "") -> None:
        report["checks"][name] = {"passed": bool(passed), "detail": detail}
        if not passed:
            failed.append(name)
        print(f"[{'PASS' if passed else 'FAIL'}] {name}: {detail}", flush=True)

    if not cuda:
        print("no CUDA device: the CUDA sections are skipped (recorded in the report)", flush=True)
    run_sections(cuda, args.quick, args.skip_compile, home, check, report)
    report["failed"] = failed
    args.out.write_text(json.dumps(report, indent=2, default=str), encoding="utf-8")
    print(f"report: {args.out}", flush=True)
    if failed:
        return 1
    return 0 if cuda else 2


if __name__ == "__main__":
    sys.exit(main())
