"""Run by test_console_memory.py in a fresh interpreter: the console launches a real run through
its dialog (n, preset, CPU, Launch), waits until it trains, then plans a sweep in the sweep
dialog (C: the registry's methods, a dry-run plan), and prints what it cost the console:
{"rss_mb": ..., "torch_imported": ...}. Usage: python console_rss_probe.py HOME"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tui_helpers

from textual.widgets import Select  # noqa: E402

from console.tui.app import LowrankConsole  # noqa: E402
from console.tui.launch_screen import LaunchScreen  # noqa: E402
from console.tui.sweep_screen import SweepScreen  # noqa: E402
from lowrank.rundir import RunDir  # noqa: E402
from tui_helpers import NOW, no_gpu_snapshot, settle  # noqa: E402


async def main(home: Path) -> dict:
    app = LowrankConsole(home, snapshot_fn=no_gpu_snapshot, clock=lambda: NOW, poll_interval=0.2)
    async with app.run_test(size=(160, 45)) as pilot:
        await pilot.press("n")
        await settle(pilot, lambda: isinstance(app.screen, LaunchScreen), what="launch dialog")
        await pilot.press("enter")  # the only preset
        await pilot.press("tab", "enter", "down", "down", "enter")  # where: start now on the CPU
        assert app.screen.query_one(Select).value == "cpu"
        await pilot.press("tab", "enter")  # Launch
        await settle(pilot, lambda: (home / "runs").is_dir() and any((home / "runs").iterdir()), timeout=120,
                     what="the run directory")
        run = RunDir(next((home / "runs").iterdir()))
        await settle(pilot, lambda: run.read_status().get("state") == "running" and run.file("metrics.jsonl").exists(),
                     timeout=120, what="the worker training")
        await settle(pilot, lambda: app.runs_table.row_count == 1, timeout=30, what="the row")
        await pilot.pause(1.0)  # curves and detail drawn for the live run
        await pilot.press("C")  # a sweep planned too: methods and plan come from child processes
        await settle(pilot, lambda: isinstance(app.screen, SweepScreen) and app.screen.is_mounted, timeout=120, what="sweep dialog")
        dialog = app.screen
        await pilot.pause(0.3)  # composed and drawn, as a user sees it before typing
        dialog.query_one("SelectionList").select("generic")
        dialog.query_one("#budgets").value = "0.3"
        dialog.action_preview()
        await settle(pilot, lambda: dialog.answer is not None, timeout=180, what="the sweep's plan")
        assert dialog.answer.ok and "rank_fraction" in dialog.answer.text, dialog.answer.text
        result = {"rss_mb": psutil.Process().memory_info().rss / 2**20, "torch_imported": "torch" in sys.modules,
                  "pid": run.read_status().get("pid"), "run_dir": str(run.path)}
    return result


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(Path(sys.argv[1])))))
