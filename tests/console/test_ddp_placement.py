"""Placement of data-parallel runs: the config's whole resources section is read (nproc and
backend included), and ``nproc`` ranks take one GPU each on a GPU host, one CPU slot without."""

from __future__ import annotations

from pathlib import Path

import pytest

from lowrank.config import load
from lowrank.errors import UserError

from console.gpus import GPUInfo, HostInfo, HostSnapshot
from console.placement import Job, Requirement, impossible, plan, requirement_from_config, resolve_requirement
from console.scheduler import requirement_from_cli

REPO = Path(__file__).resolve().parents[2]



def snap(gpus: int) -> HostSnapshot:
    host = HostInfo(hostname="test", cpu_count=8, cpu_percent=0.0, load_avg=(0.0, 0.0, 0.0),
                    memory_used_mb=0.0, memory_total_mb=1024.0)
    cards = [GPUInfo(index=i, name="sim", uuid=None, memory_used_mb=0.0, memory_total_mb=16384.0) for i in range(gpus)]
    return HostSnapshot(time=0.0, host=host, gpus=cards, nvml_error=None if cards else "no NVML (simulated)")


def test_a_resolved_preset_places_with_its_nproc_and_backend_keys():
    config = load(REPO / "presets" / "quickstart.yaml", ["resources.nproc=2"]).to_dict()
    assert {"nproc", "backend"} <= set(config["resources"])  # the schema's keys reach placement
    need = requirement_from_config(config)
    assert need.nproc == 2 and need.count(host_has_gpus=True) == 2 and need.count(host_has_gpus=False) == 0
    assert Requirement.from_dict(need.to_dict()) == need  # recorded in status.json and read back
    assert resolve_requirement(config, requirement_from_cli(cpu=True)) == Requirement(gpus=0, nproc=2)


def test_n_ranks_need_n_free_gpus_or_the_cpu():
    need = Requirement(nproc=2)
    assert plan([Job("a", need)], [], snap(1)) == []  # one GPU is not enough: it waits
    assert impossible(Job("a", need), snap(1)) == "needs 2 GPUs but this host has 1"
    assert plan([Job("a", need)], [], snap(4)) == [("a", [0, 1])]
    assert plan([Job("a", need)], [], snap(0), max_cpu_runs=1) == [("a", [])]  # gloo ranks on the CPU
    with pytest.raises(ValueError, match="one GPU each"):
        Requirement(gpus=3, nproc=2)
    with pytest.raises(UserError, match="one GPU each"):
        Requirement.from_dict({"gpus": 1, "nproc": 2})
