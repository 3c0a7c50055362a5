"""From a validated config to a ready network: model, substitution (budget solved), counts.

One function, :func:`build_network`, used by the worker, ``lowrank count`` and the
comparison planner, so all three report the same hyperparameter and the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn

from .config import ExperimentConfig
from .meta import ShapesOnly


@dataclass
class BuiltNetwork:
    """The network a config describes and the facts about it every report needs."""

    model: nn.Module
    method: str
    hp: float | None
    params: int        # the deployable network (training-only modules, e.g. an auxiliary head, excluded)
    macs: int
    dense_params: int  # the dense deployable network
    dense_macs: int
    budget_target: int | None = None
    budget_gap: float | None = None
    replaced: list[str] = field(default_factory=list)
    layers: list[dict[str, Any]] = field(default_factory=list)
    training_only_params: int = 0  # parameters only the training-only modules hold
    training_only: list[dict[str, Any]] = field(default_factory=list)  # per module: module, label, params

    def summary(self) -> dict[str, Any]:
        """The JSON-able facts (everything but the model and the per-layer table)."""
        return {key: value for key, value in self.__dict__.items() if key not in ("model", "layers")}


def build_network(config: ExperimentConfig, num_classes: int, input_shape: tuple[int, int, int],
                  device: str | torch.device = "cpu") -> BuiltNetwork:
    """Build ``config.model``, substitute its convolutions as ``config.substitute`` says.

    A budget (fraction of the dense network or absolute parameters) is turned into the
    method's hyperparameter by the exact-count solver before substitution. Every count is of the
    deployable network; the model's training-only modules are reported apart.
    """
    from .budget import check_achieved, solve_budget
    from .count import count_model
    from .models import create_model
    from .substitute import substitute

    sub = config.substitute

    def make_dense() -> nn.Module:
        return create_model(config.model.name, num_classes=num_classes, in_channels=input_shape[0],
                            **config.model.kwargs)

    with torch.device("meta"), ShapesOnly():
        dense = make_dense()  # on meta: counted here, then read (not modified) by the solver
        dense_count = count_model(dense, input_shape)

    hp, target, gap, solved = sub.hp, None, None, None
    if sub.budget is not None or sub.budget_params is not None:
        with torch.device("meta"), ShapesOnly():  # checked below, on the network substituted anyway
            solved = solve_budget(dense, sub.method, target_params=sub.budget_params,
                                  target_fraction=sub.budget, options=sub.options, skip=sub.skip, check=False)
        hp, target, gap = solved.hp, solved.target, solved.gap

    torch_device = torch.device(device)
    with ShapesOnly():  # acts on meta tensors only: a real model is initialised as always
        # on meta the counted dense network itself is substituted (the solver only read it): one build, not two
        model = dense if torch_device.type == "meta" else make_dense()
        report = substitute(model, sub.method, hp, options=sub.options, skip=sub.skip)
    model = model.to(torch_device)
    counted = count_model(model, input_shape)
    if solved is not None:
        check_achieved(sub.method, hp, solved.achieved, counted.params)
    return BuiltNetwork(model=model, method=sub.method, hp=hp, params=counted.params, macs=counted.macs,
                        dense_params=dense_count.params, dense_macs=dense_count.macs,
                        budget_target=target, budget_gap=gap,
                        replaced=[row.name for row in report.replaced],
                        layers=[dict(row.__dict__) for row in counted.layers],
                        training_only_params=counted.training_only_params, training_only=counted.training_only)
