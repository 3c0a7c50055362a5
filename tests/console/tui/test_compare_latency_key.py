"""The compare view's ``L`` key: error against measured latency (batch 1), again against throughput;
only runs with a latency, only those of the highlighted row's device key (never mixed), the title
naming the key and what was left out, and throughput's Pareto front with higher as better."""

from __future__ import annotations

import pytest
from textual.widgets import DataTable, Label

from console.tui.app import LowrankConsole
from console.tui.compare_screen import CompareScreen
from console.tui.runs_table import RunsTable
from tui_helpers import NOW, fake_snapshot, make_run, settle

CPU, GPU = "cpu: AMD EPYC 9654", "cuda: NVIDIA H100 80GB HBM3"
CPU_KEY = f"{CPU} x2 threads"


def timed(ms: float, ips: float, device: str = CPU) -> dict:
    """The keys bench.after_run writes into status.json."""
    return {"latency_ms_b1": ms, "throughput": ips, "throughput_batch": 64, "latency_device": device,
            "latency_threads": 2 if device.startswith("cpu") else None, "latency_torch": "2.4.0"}


@pytest.fixture
def timed_sweep(home):
    """Five finished runs of one sweep: three timed on the CPU (hashed is beaten on every axis),
    one on a GPU, one without a latency."""
    for index, (method, err, params, latency) in enumerate((
            ("cp", 8.0, 400_000, timed(0.05, 90_000.0, GPU)),
            ("generic", 6.5, 700_000, {}),
            ("hashed", 7.5, 500_000, timed(0.40, 4_000.0)),
            ("separable", 6.0, 1_200_000, timed(0.30, 5_000.0)),
            ("tt", 7.0, 600_000, timed(0.20, 8_000.0)))):
        make_run(home, f"20240301-12{index:02d}00-wrn-{method}-c00{index}", method=method, err=err, params=params,
                 sweep="s1", extra=latency)
    return home


@pytest.mark.slow
async def test_L_plots_measured_latency_of_one_device_then_throughput(timed_sweep):
    app = LowrankConsole(timed_sweep, snapshot_fn=fake_snapshot, clock=lambda: NOW, poll_interval=0.1,
                         host_interval=0.2)
    async with app.run_test(size=(200, 60)) as pilot:
        await settle(pilot, lambda: app.query_one(RunsTable).row_count == 5, what="rows")
        await pilot.press("c")
        await settle(pilot, lambda: isinstance(app.screen, CompareScreen), what="compare")
        screen = app.screen
        await pilot.pause(0.2)
        table = screen.query_one(DataTable)
        assert [table.get_row_at(row)[2].plain for row in range(table.row_count)] == [
            "cp", "generic", "hashed", "separable", "tt"]
        assert table.cursor_row == 0  # cp: measured on the GPU

        await pilot.press("L")
        await pilot.pause(0.1)
        assert screen.x_key == "latency" and screen.device == GPU
        assert screen.points == {"cp": [(0.05, 8.0, False)]}  # the GPU run only: never beside CPU latencies
        title = str(screen.query_one("#compare-title", Label).content)
        assert f"measured on {GPU}" in title and "4 of 5 runs left out" in title
        assert "(3 on 1 other device(s), 1 without a latency)" in title
        assert GPU in screen.plot_title and "4 left out" in screen.plot_title

        await pilot.press("down", "down", "down")  # separable: its device is the CPU
        await settle(pilot, lambda: screen.device == CPU_KEY, what="the CPU runs")
        assert screen.points == {"hashed": [(0.40, 7.5, False)], "separable": [(0.30, 6.0, False)],
                                 "tt": [(0.20, 7.0, False)]}  # generic has no latency: left out
        assert screen.front == [(0.20, 7.0), (0.30, 6.0)]  # lowest error for the latency; hashed is beaten
        title = str(screen.query_one("#compare-title", Label).content)
        assert f"measured on {CPU_KEY}" in title and "2 of 5 runs left out (1 on 1 other device(s), 1 without" in title

        await pilot.press("L")
        await pilot.pause(0.1)
        assert screen.x_key == "throughput" and screen.device == CPU_KEY
        assert sorted(x for pts in screen.points.values() for x, _, _ in pts) == [4_000.0, 5_000.0, 8_000.0]
        # more img/s is better: tt (8000, 7 %) is on the front though separable has the lower error
        assert screen.front == [(5_000.0, 6.0), (8_000.0, 7.0)]

        await pilot.press("m")  # back to the cost axes: every run, no device
        await pilot.pause(0.1)
        assert screen.x_key == "params" and screen.device is None
        assert sum(len(pts) for pts in screen.points.values()) == 5
        assert "left out" not in str(screen.query_one("#compare-title", Label).content)


async def test_L_without_any_latency_says_so(home):
    for index, method in enumerate(("tt", "cp")):
        make_run(home, f"20240301-12{index:02d}00-wrn-{method}-d00{index}", method=method, sweep="s2")
    app = LowrankConsole(home, snapshot_fn=fake_snapshot, clock=lambda: NOW, poll_interval=0.1, host_interval=0.2)
    async with app.run_test(size=(160, 45)) as pilot:
        await settle(pilot, lambda: app.query_one(RunsTable).row_count == 2, what="rows")
        await pilot.press("c")
        await settle(pilot, lambda: isinstance(app.screen, CompareScreen), what="compare")
        await pilot.press("L")
        await pilot.pause(0.1)
        assert app.screen.points == {} and app.screen.device is None
        assert "no measured latency" in str(app.screen.query_one("#compare-title", Label).content)
