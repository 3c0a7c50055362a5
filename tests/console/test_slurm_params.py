"""The sbatch options a run's ``slurm:`` section becomes (console.backends.slurm.executor_parameters)."""

from __future__ import annotations

import pytest

from lowrank.config import load

from console.backends.slurm import LIMIT_CHECK_S, executor_parameters
from slurm_helpers import REPO


def params(*overrides: str) -> dict:
    return executor_parameters(load(REPO / "presets" / "quickstart.yaml", list(overrides)).to_dict(), "q")


@pytest.mark.parametrize("minutes", [1, 2, 3, 5, 10])
def test_every_attempt_trains_before_the_signal_whatever_the_limit(minutes):
    """Slurm signals once the limit is within the delay + its 30 s check: with the default delay
    (120 s) a limit of a few minutes must still leave the attempt time to train -- at least as
    long as the window the signal may fall in."""
    delay = params(f"slurm.time={minutes}")["signal_delay_s"]
    earliest_signal = minutes * 60 - delay - LIMIT_CHECK_S  # seconds into the attempt
    assert delay >= 1 and earliest_signal >= delay and earliest_signal > 0, (minutes, delay)


def test_the_delay_asked_for_is_kept_where_the_limit_leaves_room():
    assert params()["signal_delay_s"] == 120  # the default 60-minute limit
    assert params("slurm.time=1", "slurm.signal_delay_s=10")["signal_delay_s"] == 10
    assert params("slurm.time=600", "slurm.signal_delay_s=900")["signal_delay_s"] == 900


def test_the_section_becomes_submitit_parameters():
    got = params("slurm.partition=gpu", "slurm.time=90", "slurm.nodes=2", "slurm.gpus_per_node=4",
                 "slurm.cpus_per_task=8", "slurm.mem=16G", "slurm.account=lab", "slurm.qos=high",
                 "slurm.constraint=a100", "slurm.array_parallelism=3", "resources.nproc=4",
                 "slurm.extra={exclude: node3, mail_type: END}")
    # several nodes: one task per node (its torchrun launcher), which gets the CPUs of its 4 ranks
    assert {key: got[key] for key in ("partition", "time", "nodes", "gpus_per_node", "cpus_per_task", "account",
                                      "qos", "constraint", "array_parallelism", "ntasks_per_node")} == {
        "partition": "gpu", "time": 90, "nodes": 2, "gpus_per_node": 4, "cpus_per_task": 32, "account": "lab",
        "qos": "high", "constraint": "a100", "array_parallelism": 3, "ntasks_per_node": 1}
    assert got["additional_parameters"] == {"exclude": "node3", "mail-type": "END", "mem": "16G"}


def test_one_node_has_a_task_per_rank_with_its_cpus():
    got = params("slurm.cpus_per_task=8", "resources.nproc=4")
    assert (got["nodes"], got["ntasks_per_node"], got["cpus_per_task"]) == (1, 4, 8)


def test_several_nodes_of_one_rank_each_need_no_cpu_request():
    got = params("slurm.nodes=2")
    assert (got["nodes"], got["ntasks_per_node"]) == (2, 1) and "cpus_per_task" not in got
