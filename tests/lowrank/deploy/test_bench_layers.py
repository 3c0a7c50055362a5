"""The layer benchmark returns one row per method with ratios to the dense conv of the same run."""

from __future__ import annotations

import pytest

from lowrank.deploy.layers import bench_acdc_linear, bench_layers


def test_bench_layers_rows_and_ratios():
    rows = bench_layers([8], [1, 2], hw=4, repeat=1, methods=["acdc", "separable"])
    assert [r["method"] for r in rows] == ["dense", "acdc", "separable"] * 2
    for row in rows:
        assert row["fwd_ms"] > 0 and row["fwdbwd_ms"] > 0
    for batch in (1, 2):
        group = [r for r in rows if r["batch"] == batch]
        dense = group[0]
        assert dense["fwd_ratio"] == 1.0 and dense["params"] == 8 * 8 * 9
        for row in group[1:]:
            assert row["fwd_ratio"] == pytest.approx(row["fwd_ms"] / dense["fwd_ms"])
            assert row["fwdbwd_ratio"] == pytest.approx(row["fwdbwd_ms"] / dense["fwdbwd_ms"])


def test_bench_acdc_linear_compares_to_linear():
    rows = bench_acdc_linear(n=32, batch=4, layers=(1, 2), collapse_layers=(1,), repeat=1)
    assert [r["method"] for r in rows] == ["linear", "acdc L=1 fast", "acdc L=2 fast", "acdc L=1 collapse"]
    assert rows[0]["params"] == 32 * 32 + 32
    assert rows[1]["params"] == 2 * 32 and rows[2]["params"] == 4 * 32
    assert rows[0]["fwd_ratio"] == 1.0
    # timed with the worker's malloc settings, as bench model (glibc: page faults were half the ACDC time)
    from lowrank.train.allocator import tune_cpu_allocator

    assert all(r["malloc"] == tune_cpu_allocator()["malloc"] for r in rows)
