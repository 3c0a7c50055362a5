"""Measure the console's quality bar: startup to first paint, 200-run responsiveness, idle CPU.

    .venv/bin/python benchmarks/console_perf.py [--seconds 20]

1. startup: a fresh interpreter (process creation -> the app's first frame, headless
   ``run_test``), with 50 runs on disk; also checks that torch was not imported.
2. responsiveness with 200 runs: time until all rows are shown, latency of cursor
   moves, a sort, a filter keystroke, and of applying one poll that changed 20 rows.
3. idle CPU with 20 running runs: ``lowrank-console`` in a real pseudo-terminal
   (160x45), while a writer process appends step metrics to every run twice a second
   and updates its status every two seconds, as training workers do; CPU time of the
   console process over ``--seconds`` seconds via psutil.
"""

from __future__ import annotations

import argparse
import asyncio
import fcntl
import json
import os
import pty
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import termios
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def make_runs(home: Path, total: int, running: int, *, pid: int | None = None, epochs_done: int = 20) -> list[str]:
    """``total`` runs (``running`` of them running, owned by ``pid``), with metrics and logs."""
    import psutil

    from lowrank.rundir import RunDir

    host = socket.gethostname()
    create_time = psutil.Process(pid).create_time() if pid else None
    ids = []
    methods = ("separable", "tt", "cp", "tucker", "acdc", "hashed", "shuffle")
    for i in range(total):
        state = "running" if i < running else ("finished", "failed", "killed")[i % 3]
        config = {"name": f"bench{i}", "model": {"name": "wrn"}, "data": {"name": "cifar10"},
                  "substitute": {"method": methods[i % len(methods)], "budget": 0.1 + (i % 9) / 10},
                  "train": {"epochs": 200, "device": "cpu"}}
        run = RunDir.create(config, home=home, run_id=f"20240301-{i:06d}-bench{i}-{i:04x}")
        lines = []
        for e in range(1, epochs_done + 1):
            for b in range(1, 11):
                lines.append({"event": "step", "epoch": e, "batch": b, "batches": 10, "split": "train",
                              "loss": 2 / (e + b / 10), "err1": 50 / (e + b / 10)})
            lines.append({"event": "eval", "epoch": e, "split": "val", "loss": 2.2 / e, "err1": 55 / e})
        with open(run.file("metrics.jsonl"), "w") as handle:
            handle.writelines(json.dumps({"time": 0, **line}) + "\n" for line in lines)
        run.file("output.log").write_text("".join(f"epoch {e} ...\n" for e in range(epochs_done)))
        status = {"state": state, "epoch": epochs_done, "epochs": 200, "started": "2024-03-01T12:00:00+00:00",
                  "params": 100_000 + 1000 * i, "last_loss": 0.5, "best_val_err1": 10 + i % 7, "host": host}
        if state == "running":
            status.update(pid=pid, create_time=create_time, launcher_host=host, gpus=[])
        else:
            status.update(ended="2024-03-01T13:00:00+00:00", test_err1=10 + i % 5)
        run.update_status(**status)
        ids.append(run.run_id)
    return ids


# ---------------------------------------------------------------- 1. startup


def startup_child(home: str) -> None:
    """In a fresh interpreter: process start -> first frame of the app."""
    import psutil

    born = psutil.Process().create_time()
    offset = time.time() - time.perf_counter()
    from console.tui.app import LowrankConsole

    async def main() -> dict:
        app = LowrankConsole(home)
        async with app.run_test(size=(160, 45)) as pilot:
            while app.first_paint is None:
                await pilot.pause(0.01)
            painted = app.first_paint + offset
            while app.runs_table.row_count == 0:
                await pilot.pause(0.01)
            rows = time.perf_counter() + offset
        return {"first_paint_ms": (painted - born) * 1000, "rows_shown_ms": (rows - born) * 1000,
                "torch_imported": "torch" in sys.modules, "lowrank_config_imported": "lowrank.config" in sys.modules}

    print(json.dumps(asyncio.run(main())))


def bench_startup(tmp: Path, repeats: int = 5) -> dict:
    home = tmp / "startup"
    make_runs(home, 50, 0)
    results = []
    for _ in range(repeats):
        out = subprocess.run([sys.executable, __file__, "--startup-child", str(home)], capture_output=True,
                             text=True, check=True, cwd=REPO)
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    paints = sorted(r["first_paint_ms"] for r in results)
    return {"first_paint_ms_median": statistics.median(paints), "first_paint_ms_min": paints[0],
            "first_paint_ms_max": paints[-1],
            "rows_shown_ms_median": statistics.median(r["rows_shown_ms"] for r in results),
            "torch_imported": any(r["torch_imported"] for r in results),
            "lowrank_config_imported": any(r["lowrank_config_imported"] for r in results)}


# ---------------------------------------------------------------- 2. 200 runs


def bench_table(tmp: Path) -> dict:
    from console.tui.app import LowrankConsole
    from lowrank.rundir import RunDir

    home = tmp / "table"
    ids = make_runs(home, 200, 0)
    applied: list[float] = []

    async def main() -> dict:
        app = LowrankConsole(home, poll_interval=0.2)
        async with app.run_test(size=(160, 45)) as pilot:
            original = app.runs_table.set_records

            def timed(records):
                began = time.perf_counter()
                original(records)
                applied.append(time.perf_counter() - began)

            app.runs_table.set_records = timed
            began = time.perf_counter()
            while app.runs_table.row_count < 200:
                await pilot.pause(0.01)
            loaded = time.perf_counter() - began
            await pilot.pause(0.5)
            moves = []
            for _ in range(40):
                t0 = time.perf_counter()
                await pilot.press("down")
                moves.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            await pilot.press("s")  # sort by another column: all 200 rows reordered
            sort = time.perf_counter() - t0
            t0 = time.perf_counter()
            await pilot.press("slash", "1")  # filter as you type
            filt = time.perf_counter() - t0
            await pilot.press("escape")
            await pilot.pause(0.5)
            applied.clear()
            for rid in ids[:20]:  # 20 runs progress at once
                RunDir(home / "runs" / rid).update_status(epoch=21, last_loss=0.4)
            while not applied:
                await pilot.pause(0.01)
            return {"rows": app.runs_table.row_count, "load_200_rows_ms": loaded * 1000,
                    "cursor_move_ms_median": statistics.median(moves) * 1000, "cursor_move_ms_max": max(moves) * 1000,
                    "sort_ms": sort * 1000, "filter_keystroke_ms": filt * 1000,
                    "apply_poll_20_changed_rows_ms": applied[0] * 1000}

    return asyncio.run(main())


# ---------------------------------------------------------------- 3. idle CPU


WRITER = r"""
import json, os, sys, time
from lowrank.rundir import RunDir
root, n = sys.argv[1], 0
runs = [RunDir(os.path.join(root, name)) for name in sorted(os.listdir(root))[:20]]
while True:
    n += 1
    for run in runs:
        run.append_metric({"event": "step", "epoch": 21 + n // 20, "batch": n % 20 + 1, "batches": 20,
                           "split": "train", "loss": 1 / (1 + n / 50), "err1": 30 / (1 + n / 50)})
        if n % 4 == 0:
            run.update_status(epoch=21 + n // 20, heartbeat=time.strftime("%H:%M:%S"), last_loss=1 / (1 + n / 50))
    time.sleep(0.5)
"""


def bench_cpu(tmp: Path, seconds: float) -> dict:
    import psutil

    home = tmp / "cpu"
    (home / "runs").mkdir(parents=True)
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(home / "runs")], cwd=REPO,
                              start_new_session=True)
    try:
        make_runs(home, 20, 20, pid=writer.pid)
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 45, 160, 0, 0))
        env = dict(os.environ, TERM="xterm-256color", LOWRANK_HOME=str(home), COLUMNS="160", LINES="45")
        console = subprocess.Popen([str(Path(sys.executable).with_name("lowrank-console"))], stdin=slave,
                                   stdout=slave, stderr=slave, env=env, cwd=REPO, start_new_session=True)
        os.close(slave)
        received = [0]

        def drain() -> None:  # the terminal side: read everything the app draws
            while True:
                try:
                    data = os.read(master, 65536)
                except OSError:
                    return
                if not data:
                    return
                received[0] += len(data)

        threading.Thread(target=drain, daemon=True).start()
        proc = psutil.Process(console.pid)
        time.sleep(6.0)  # start-up and first reads
        results = {}
        for label, keys in (("table_focused", b""), ("running_run_highlighted_with_live_curves", b"\x1b[B")):
            os.write(master, keys)
            time.sleep(2.0)
            before, bytes_before, t0 = proc.cpu_times(), received[0], time.monotonic()
            time.sleep(seconds)
            after, elapsed = proc.cpu_times(), time.monotonic() - t0
            used = (after.user - before.user) + (after.system - before.system)
            results[f"cpu_pct_of_one_core_{label}"] = 100.0 * used / elapsed
            results[f"terminal_kib_per_s_{label}"] = (received[0] - bytes_before) / 1024 / elapsed
        os.write(master, b"q")
        try:
            console.wait(10)
        except subprocess.TimeoutExpired:
            console.kill()
        results["quit_exit_code"] = console.returncode
        os.close(master)
        return results
    finally:
        writer.kill()
        writer.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="CPU measuring window per case")
    parser.add_argument("--startup-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.startup_child:
        startup_child(args.startup_child)
        return
    tmp = Path(tempfile.mkdtemp(prefix="lowrank-console-perf-"))
    try:
        print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}", flush=True)
        for name, bench in (("startup", lambda: bench_startup(tmp)), ("200 runs", lambda: bench_table(tmp)),
                            ("20 running runs, idle", lambda: bench_cpu(tmp, args.seconds))):
            figures = bench()
            print(f"\n{name}:")
            for key, value in figures.items():
                print(f"  {key:<52} {value:.1f}" if isinstance(value, float) else f"  {key:<52} {value}", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
