"""What ships: the deployable network of a preset or of a finished run, and its dense reference.

One function per source, both returning a :class:`Deployable`, so ``lowrank bench model``,
``bench.after_run`` and ``lowrank export`` measure and write exactly the same network:

- eval mode (drop-path and dropout off, batch norm on its running statistics, structured
  layers on their counted eval path: ACDC/AFDF collapsed where the count says so, TT/Tucker/CP
  and hashed weights built once and cached);
- the model's training-only modules (``model.training_only_modules``: the DARTS auxiliary head)
  removed, so the parameters it holds are what ``lowrank count`` calls the deployable network;
- a run's weights: ``best.pt`` (the best validation epoch), else ``checkpoint.pt``; a Bayesian
  run (``bayes:``) ships its physically pruned plain network, ``pruned.pt``;
- a preset's initial weights (the timing of a network does not depend on its values).

The dense reference is the same preset with ``substitute.method: dense`` and no ``bayes:``: what
the compressed network is compared against, measured in the same run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from ..config import ExperimentConfig, from_dict, load
from ..errors import UserError


@dataclass
class Deployable:
    """A network as it ships, with the facts every report about it needs."""

    model: nn.Module                  # eval mode, on ``device``, training-only modules removed
    config: ExperimentConfig
    input_shape: tuple[int, int, int]  # (C, H, W) of one image
    num_classes: int
    params: int                       # unique parameters of ``model`` (= lowrank count's deployable count)
    macs: int                         # declared eval mult-adds per image
    method: str
    hp: float | None
    weights: str                      # "initial weights", or the file the weights came from
    label: str                        # how tables name it: "tt@0.1", "dense", "bayes (pruned)"
    layers: list[dict[str, Any]] = field(default_factory=list)  # lowrank count's per-layer rows
    removed: list[dict[str, Any]] = field(default_factory=list)  # training-only modules dropped

    @property
    def device(self) -> torch.device:
        """Where the model's tensors are."""
        for tensor in (*self.model.parameters(), *self.model.buffers()):
            return tensor.device
        return torch.device("cpu")

    def example(self, batch: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """A random batch of the network's input shape on its device (timing needs no real data)."""
        generator = torch.Generator().manual_seed(0)
        return torch.randn((batch, *self.input_shape), generator=generator).to(self.device, dtype)

    def summary(self) -> dict[str, Any]:
        """The JSON-able facts (everything but the model and the config)."""
        return {"label": self.label, "model": self.config.model.name, "method": self.method, "hp": self.hp,
                "params": self.params, "macs": self.macs, "weights": self.weights,
                "input_shape": list(self.input_shape), "num_classes": self.num_classes,
                "removed": self.removed}


def drop_training_only(model: nn.Module) -> list[dict[str, Any]]:
    """Remove the model's training-only modules in place (set to None: an eval forward never calls
    them); returns what was removed (module, label, parameters it alone held)."""
    from ..count import training_only_breakdown, training_only_modules

    removed = training_only_breakdown(model)
    for name in training_only_modules(model):
        parent_name, _, attr = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, attr, None)
    return removed


def _label(config: ExperimentConfig, hp: float | None) -> str:
    sub = config.substitute
    if sub.method == "dense":
        return "dense"
    if sub.budget is not None:
        return f"{sub.method}@{sub.budget:g}"
    if sub.budget_params is not None:
        return f"{sub.method}@{sub.budget_params:,}p"
    return f"{sub.method}" + (f" hp={hp:g}" if hp is not None else "")


def from_config(config: ExperimentConfig, device: str | torch.device = "cpu",
                weights: Path | None = None, label: str | None = None) -> Deployable:
    """The deployable network ``config`` builds (substitution, budget solved), with ``weights``
    (a run's best.pt or checkpoint.pt) loaded into it when given."""
    from ..build import build_network
    from ..data import dataset_shape
    from ..distill import load_weights

    if config.bayes is not None:
        raise UserError("a bayes: preset has no deployable network before training: what ships is the "
                        "physically pruned model its run writes (pruned.pt)", key="bayes",
                        hint="train it (lowrank run PRESET), then name the finished run instead of the preset")
    num_classes, input_shape = dataset_shape(config.data)
    net = build_network(config, num_classes, input_shape, device="cpu")
    model = net.model
    if weights is not None:
        load_weights(model, weights, what="the run's weights")
    removed = drop_training_only(model)
    model = model.to(device).eval()
    layers = [row for row in net.layers if not row.get("training_only")]
    return Deployable(model=model, config=config, input_shape=tuple(input_shape), num_classes=num_classes,
                      params=net.params, macs=net.macs, method=net.method, hp=net.hp,
                      weights=str(weights) if weights is not None else "initial weights",
                      label=label or _label(config, net.hp), layers=layers, removed=removed)


def from_preset(preset: str | Path, overrides: list[str] | None = None,
                device: str | torch.device = "cpu") -> Deployable:
    """A preset's deployable network with its initial weights."""
    return from_config(load(preset, overrides or []), device)


def run_weights(run_dir: Path) -> Path:
    """The weights a run ships: best.pt (best validation epoch), else checkpoint.pt."""
    from ..rundir import BEST_FILE, CHECKPOINT_FILE

    for name in (BEST_FILE, CHECKPOINT_FILE):
        if (run_dir / name).is_file():
            return run_dir / name
    raise UserError(f"run has no {BEST_FILE} or {CHECKPOINT_FILE} yet: nothing trained to deploy", file=str(run_dir),
                    hint="wait until the run has evaluated once (or bench its preset: lowrank bench model PRESET)")


def run_config(run_dir: Path) -> ExperimentConfig:
    """The resolved config a run trained with (its config.yaml), validated."""
    from ..rundir import CONFIG_FILE, RunDir

    run = RunDir(run_dir)
    return from_dict(run.read_config(), source=str(run.file(CONFIG_FILE)))


def from_run(run_dir: str | Path, device: str | torch.device = "cpu") -> Deployable:
    """A finished (or checkpointed) run's deployable network with its trained weights; a
    Bayesian run's physically pruned network (pruned.pt)."""
    run_dir = Path(run_dir)
    config = run_config(run_dir)
    if config.bayes is not None:
        return _pruned(run_dir, config, device)
    return from_config(config, device, weights=run_weights(run_dir))


def _pruned(run_dir: Path, config: ExperimentConfig, device: str | torch.device) -> Deployable:
    """A Bayesian run's pruned.pt as a Deployable (counted as it is: smaller plain layers)."""
    from ..bayes.report import PRUNED_FILE, load_pruned
    from ..count import count_model
    from ..data import dataset_shape

    path = run_dir / PRUNED_FILE
    if not path.is_file():
        raise UserError(f"Bayesian run has no {PRUNED_FILE}: it is written when the run finishes", file=str(run_dir),
                        hint="wait for the run to finish (lowrank ls), or relaunch it with --resume")
    num_classes, input_shape = dataset_shape(config.data)
    model = load_pruned(path, num_classes, input_shape[0], device="cpu")
    removed = drop_training_only(model)
    counted = count_model(model, input_shape)
    layers = [dict(row.__dict__) for row in counted.layers if not row.training_only]
    return Deployable(model=model.to(device).eval(), config=config, input_shape=tuple(input_shape),
                      num_classes=num_classes, params=counted.params, macs=counted.macs, method="bayes", hp=None,
                      weights=str(path), label="bayes (pruned)", layers=layers, removed=removed)


def dense_config(config: ExperimentConfig) -> ExperimentConfig:
    """``config`` with no substitution and no Bayesian layers: the dense network of the same preset."""
    data = config.to_dict()
    data["substitute"] = {**data.get("substitute", {}), "method": "dense", "hp": None, "budget": None,
                          "budget_params": None, "options": {}}
    data["bayes"] = None
    return from_dict(data, source="<dense reference>")


def dense_reference(subject: Deployable) -> Deployable:
    """The dense network of ``subject``'s preset, on the same device, with initial weights."""
    return from_config(dense_config(subject.config), subject.device, label="dense")
