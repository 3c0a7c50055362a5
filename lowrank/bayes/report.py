"""The end of a BC-GNJ run: masks, the compressed architecture, bit widths, and real errors.

Evaluated, not estimated: the posterior-mean model before masking, the masked model (the run's
``test_err1``), the physically pruned plain model (``pruned.pt``; it must agree with the masked
one, checked output by output), and the pruned model with weights rounded to their bit widths:
to the float format they describe (``quantised_test_err1``, the paper's) and to the tutorial's
absolute grid of step 2^-s (``quantised_grid_test_err1``); see :mod:`lowrank.bayes.precision`.
Everything goes to ``bayes.json`` in the run directory (written atomically).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn as nn

from ..rundir import RESULTS_FILE, atomic_write_text
from .layers import BayesConv2d
from .precision import Compression
from .prune import Kept, SelectInputs

REPORT_FILE = "bayes.json"
PRUNED_FILE = "pruned.pt"
MATCH_TOLERANCE = 1e-4  # max |logit difference| for the pruned model to count as the masked one


def layer_table(kept: list[Kept], masks: dict[str, torch.Tensor], thresholds: list[float],
                comp: Compression) -> list[dict[str, Any]]:
    rows = []
    for row, threshold in zip(kept, thresholds):
        conv = isinstance(row.layer, BayesConv2d)
        rows.append({"layer": row.name, "kind": "conv" if conv else "linear",
                     "groups": "output channels" if conv else "input neurons",
                     "threshold": threshold, "groups_total": int(masks[row.name].numel()),
                     "groups_kept": int(masks[row.name].sum()),
                     "in": int(row.keep_in.numel()), "in_kept": int(row.keep_in.sum()),
                     "out": int(row.keep_out.numel()), "out_kept": int(row.keep_out.sum()),
                     "dense_weights": row.dense_weights, "kept_weights": row.weights,
                     "significand_bits": comp.significand[row.name], "bits": comp.bits[row.name]})
    return rows


@torch.no_grad()
def max_output_gap(first: nn.Module, second: nn.Module, loader, move: Callable) -> float:
    """The largest |difference| of the two models' logits over ``loader``."""
    first.eval()
    second.eval()
    gap = 0.0
    for images, targets in loader:
        images, _ = move(images, targets)
        a, b = first(images), second(images)
        a, b = (a[0] if isinstance(a, tuple) else a), (b[0] if isinstance(b, tuple) else b)
        gap = max(gap, float((a.float() - b.float()).abs().max()))
    return gap


def save_pruned(path: Path, pruned: nn.Module, kept: list[Kept], config: dict[str, Any]) -> None:
    """pruned.pt: tensors and plain data only (loadable with weights_only=True by :func:`load_pruned`)."""
    from ..train.checkpoint import atomic_save

    shapes = {}
    for row in kept:
        plain = pruned.get_submodule(row.name)
        selected = isinstance(plain, nn.Sequential)  # SelectInputs, then the layer
        layer = plain[-1] if selected else plain
        shapes[row.name] = {"kind": "conv" if isinstance(layer, nn.Conv2d) else "linear",
                            "weight": list(layer.weight.shape), "bias": layer.bias is not None,
                            "select": int(plain[0].index.numel()) if selected else None}
    atomic_save({"model": pruned.state_dict(), "layers": shapes, "config": config}, path)


def load_pruned(path: Path | str, num_classes: int, in_channels: int, device: str = "cpu") -> nn.Module:
    """Rebuild the plain pruned network of a pruned.pt (the model from its config, smaller layers)."""
    from ..models import create_model
    from ..safeload import load_file

    state = load_file(path, what="pruned model", map_location=device)
    config = state["config"]
    model = create_model(config["model"]["name"], num_classes=num_classes, in_channels=in_channels,
                         **config["model"].get("kwargs", {}))
    for name, spec in state["layers"].items():
        dense = model.get_submodule(name)
        out_units, in_units = spec["weight"][:2]
        if spec["kind"] == "conv":
            plain = nn.Conv2d(in_units, out_units, dense.kernel_size, dense.stride, dense.padding, dense.dilation,
                              bias=spec["bias"])
        else:
            plain = nn.Linear(in_units, out_units, bias=spec["bias"])
        if spec.get("select") is not None:
            plain = nn.Sequential(SelectInputs(torch.zeros(spec["select"], dtype=torch.long)), plain)
        parent_name, _, attr = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, attr, plain)
    model.load_state_dict(state["model"])
    return model.to(device)


def baseline_error(home: Path, name: str | None, seed: int) -> tuple[float | None, str | None]:
    """test_err1 and run id of the latest finished run called ``name`` with this seed in results.csv
    (also as ``lowrank run --set train.seed=N`` names it: ``NAME seed=N``)."""
    if not name:
        return None, None
    names = {name, f"{name} seed={seed}"}
    found: tuple[float | None, str | None] = (None, None)
    try:
        with open(home / RESULTS_FILE, encoding="utf-8", errors="replace", newline="") as handle:
            for row in csv.DictReader(handle):
                if row.get("name") in names and row.get("seed") == str(seed) and row.get("test_err1"):
                    try:
                        found = (float(row["test_err1"]), row.get("run_id"))
                    except ValueError:
                        continue
    except FileNotFoundError:
        pass
    return found


def write_report(path: Path, report: dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps(report, indent=2, allow_nan=False, default=str) + "\n")
