"""``bench.after_run``: the finished run's deployable network timed on the run's device, recorded
with its results (status.json summary, results.csv columns; lowrank.deploy.records).

Batch 1 and the throughput batch (``bench.batch``, default ``data.batch_size``), eager, on the
run's device with the worker's thread count, ``bench.repeat`` interleaved rounds. The network is
the deployable one (training-only modules removed; a Bayesian run's pruned.pt) with the
config's initial weights for the others: a network's timing does not depend on its values.
A measurement that fails is recorded as ``latency_error`` and never fails the run.
"""

from __future__ import annotations

import traceback
from pathlib import Path
from typing import Any

import torch

from ..config import ExperimentConfig


def measure_run(run_dir: Path, config: ExperimentConfig, device: torch.device) -> dict[str, Any]:
    """The summary keys of :data:`lowrank.deploy.records.SUMMARY_KEYS` and ``latency`` (everything
    measured), or ``latency_error`` with the reason."""
    from .deployable import _pruned, from_config
    from .latency import measure

    try:
        net = _pruned(Path(run_dir), config, device) if config.bayes is not None else from_config(config, device)
        batch = config.bench.batch or config.data.batch_size
        batches = [1] if batch == 1 else [1, batch]
        record = measure(net, batches, repeat=config.bench.repeat)
    except Exception as error:  # noqa: BLE001 - a timing problem must not fail a trained run
        traceback.print_exc()
        return {"latency_error": f"{type(error).__name__}: {error}"}
    by_batch = {row["batch"]: row for row in record["batches"]}
    return {"latency_ms_b1": by_batch[1]["ms"], "throughput": by_batch[batch]["throughput"],
            "throughput_batch": batch, "latency_device": record["device_name"],
            "latency_threads": record["threads"] if record["device"] == "cpu" else None,
            "latency_torch": record["torch"], "latency": {**record, "network": net.label, "params": net.params}}
