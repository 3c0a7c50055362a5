"""Whole-network latency: interleaved rows per (threads, batch, mode), ratios to the dense network of
the same preset, where the time goes by module depth, and the one-network record of bench.after_run."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from lowrank.deploy.deployable import Deployable, dense_reference, from_preset
from lowrank.deploy.latency import bench_model, depth_groups, measure, parse_threads, time_by_module, usable_cores
from lowrank.deploy.records import device_key, pick_device

REPO = Path(__file__).resolve().parents[3]
QUICK = REPO / "presets" / "quickstart.yaml"


def test_bench_model_times_both_networks_per_threads_batch_and_mode():
    subject = from_preset(QUICK)
    reference = dense_reference(subject)
    result = bench_model(subject, reference, threads=[1], batches=[1, 4], modes=["eager"], repeat=3, min_seconds=0)
    assert [(row["threads"], row["batch"], row["mode"]) for row in result["rows"]] == [(1, 1, "eager"), (1, 4, "eager")]
    for row in result["rows"]:
        assert row["ms"] > 0 and row["dense_ms"] > 0 and row["rounds"] >= 3
        assert row["per_image_ms"] == pytest.approx(row["ms"] / row["batch"])
        assert row["throughput"] == pytest.approx(1e3 * row["batch"] / row["ms"])
        # the ratio is the median of per-round ratios: within the rounds' extremes of ms / dense_ms
        assert 0 < row["ratio"] < 100
    assert result["declared"]["params_ratio"] == pytest.approx(subject.params / reference.params)
    assert result["declared"]["macs_ratio"] == pytest.approx(subject.macs / reference.macs)
    assert result["environment"]["device_name"].startswith("cpu: ")
    assert result["environment"]["torch"] == torch.__version__


def test_the_breakdown_groups_what_lowrank_count_groups_and_adds_up():
    subject = from_preset(QUICK)
    reference = dense_reference(subject)
    result = bench_model(subject, reference, threads=[1], batches=[2], modes=["eager"], repeat=2, depth=2,
                         min_seconds=0)
    table = result["breakdown"]
    groups = depth_groups(subject.layers, 2)
    named = [row for row in table["rows"] if not row["name"].startswith("(")]
    assert [row["name"] for row in named] == list(groups)
    assert sum(row["params"] for row in named) == subject.params
    assert sum(row["dense_params"] for row in named) == reference.params
    assert sum(row["macs"] for row in named) == subject.macs
    assert all(row["ms"] is not None and row["ms"] >= 0 for row in table["rows"])
    assert sum(row["ms"] for row in table["rows"]) == pytest.approx(table["total_ms"], rel=1e-6)


class Sleepy(nn.Module):
    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        time.sleep(self.seconds)
        return x


def test_time_by_module_puts_the_time_where_it_is_spent():
    model = nn.Sequential(nn.Linear(4, 4), nn.Sequential(Sleepy(0.02), nn.Identity()), nn.Linear(4, 2))
    spent, total = time_by_module(model, torch.zeros(1, 4), ["0", "1", "1.0", "2"], repeat=2)
    assert set(spent) == {"0", "1", "2"}  # "1.0" is inside "1": its time is the outer one's
    assert spent["1"] >= 20.0 and spent["0"] < 5.0 and spent["2"] < 5.0
    assert total >= spent["1"]


def test_measure_records_what_produced_the_figures():
    subject = from_preset(QUICK)
    record = measure(subject, [1, 8], repeat=2, threads=1)
    assert [row["batch"] for row in record["batches"]] == [1, 8]
    assert record["threads"] == 1 and record["device"] == "cpu" and record["torch"] == torch.__version__
    assert all(row["ms"] > 0 and row["throughput"] > 0 for row in record["batches"])


def test_thread_lists():
    assert parse_threads("1,all") == list(dict.fromkeys([1, usable_cores()]))  # "all" = every usable core
    assert parse_threads("2, 1") == [2, 1]
    for bad in ("0", "-1", "x", "", ","):
        with pytest.raises(ValueError):
            parse_threads(bad)


def test_latencies_of_different_devices_are_never_one_axis():
    cpu2 = {"latency_ms_b1": 1.0, "latency_device": "cpu: EPYC", "latency_threads": 2}
    cpu1 = {"latency_ms_b1": 2.0, "latency_device": "cpu: EPYC", "latency_threads": 1}
    gpu = {"latency_ms_b1": 0.1, "latency_device": "cuda: H100", "latency_threads": None}
    none = {"latency_ms_b1": None}
    assert device_key(cpu2) == "cpu: EPYC x2 threads" and device_key(gpu) == "cuda: H100" and device_key(none) is None
    assert pick_device([cpu2, dict(cpu2), none]) == ("cpu: EPYC x2 threads", None)
    key, reason = pick_device([cpu2, cpu1])
    assert key is None and "2 devices" in reason and "not comparable" in reason
    assert pick_device([cpu2, cpu1, gpu], "H100") == ("cuda: H100", None)
    assert pick_device([none])[0] is None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.gpu
def test_cuda_rows_are_synchronised_and_named():
    subject = from_preset(QUICK, device="cuda")
    result = bench_model(subject, dense_reference(subject), threads=[1], batches=[1], modes=["eager"], repeat=2)
    assert result["environment"]["device_name"].startswith("cuda: ")


def test_a_bare_deployable_is_timed_like_a_preset():
    """bench_model takes any pair of Deployables (the library use: a network built in a notebook)."""
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.Flatten(), nn.Linear(4 * 8 * 8, 10)).eval()
    base = from_preset(QUICK)
    mine = Deployable(model=model, config=base.config, input_shape=(1, 8, 8), num_classes=10,
                      params=sum(p.numel() for p in model.parameters()), macs=1, method="custom", hp=None,
                      weights="initial weights", label="custom",
                      layers=[{"name": "0", "params": 40, "macs": 1}, {"name": "2", "params": 2570, "macs": 0}])
    result = bench_model(mine, dense_reference(base), threads=[1], batches=[1], modes=["eager"], repeat=2,
                         min_seconds=0)
    assert result["rows"][0]["ms"] > 0


def test_cheap_settings_get_more_rounds_within_the_time_budget():
    subject = from_preset(QUICK)
    reference = dense_reference(subject)
    result = bench_model(subject, reference, threads=[1], batches=[1], modes=["eager"], repeat=3, min_seconds=0.5)
    assert result["rows"][0]["rounds"] > 3  # a quickstart forward is well under a millisecond
