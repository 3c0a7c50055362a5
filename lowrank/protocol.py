"""Training protocols as data: phases, the per-step objective, drop-path and optimisers.

A run is a list of :class:`Phase` (one ``train`` phase, or the imitation stages in
order), each with its own optimiser and lr schedule over its own epochs. The per-step
loss is an :class:`Objective` chosen from the config - cross-entropy, distillation
(KD + AT, :mod:`lowrank.distill`) or layer-wise imitation (:mod:`lowrank.imitation`) - so
the loop has no network- or method-specific branches. Every objective adds
``train.aux_weight`` x the auxiliary head's CE when the model returns ``(logits, aux)``
(DARTS: 0.4), except imitation, which does not use one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import ExperimentConfig, ScheduleConfig
from .distill import Distiller, split_output
from .errors import UserError

STAGE_NUMBERS = {"block": 1, "output": 2, "finetune": 3}


@dataclass(frozen=True)
class Phase:
    """Epochs ``start .. start + epochs - 1`` (0-based, global) trained with one optimiser."""

    index: int
    name: str  # "train", or the imitation stage: block | output | finetune
    start: int
    epochs: int
    optimizer: str
    lr: float
    weight_decay: float
    schedule: ScheduleConfig
    stage: int | None = None  # imitation stage number 1..3

    @property
    def end(self) -> int:
        return self.start + self.epochs


def plan_phases(config: ExperimentConfig) -> list[Phase]:
    """The phases of a run; their epochs add up to ``train.epochs`` (config validation checks it)."""
    train = config.train
    if config.imitation is None:
        return [Phase(0, "train", 0, train.epochs, train.optimizer, train.lr, train.weight_decay, train.schedule)]
    phases, start = [], 0
    for i, stage in enumerate(config.imitation.stages):
        phases.append(Phase(i, stage.name, start, stage.epochs, stage.optimizer or train.optimizer,
                            stage.lr if stage.lr is not None else train.lr,
                            stage.weight_decay if stage.weight_decay is not None else train.weight_decay,
                            stage.schedule or train.schedule, STAGE_NUMBERS[stage.name]))
        start += stage.epochs
    return phases


def drop_path_prob(maximum: float, epoch: int, epochs: int) -> float:
    """Drop-path probability during 0-based ``epoch``: ``maximum * epoch / epochs``, as the
    DARTS training script sets ``model.drop_path_prob`` at the start of each epoch."""
    return maximum * epoch / epochs


def make_optimizer(config: ExperimentConfig, phase: Phase, model: nn.Module,
                   extra: list[nn.Parameter] = ()) -> torch.optim.Optimizer:
    """SGD (momentum, nesterov), Adam or AdamW over weight-decay groups, plus ``extra``
    parameters (imitation adapters) in their own group at the phase's weight decay.

    Substituted layers get weight decay x (compressed / dense parameters) when
    ``substitute.scale_weight_decay`` is on (research notes, 12 Dec 2018).
    """
    from .param_groups import param_groups

    train = config.train
    groups = param_groups(model, phase.weight_decay, scale_by_compression=config.substitute.scale_weight_decay)
    if extra:
        groups.append({"name": "adapters", "params": list(extra), "weight_decay": phase.weight_decay})
    if phase.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=phase.lr, momentum=train.momentum, nesterov=train.nesterov)
    optimizer_cls = torch.optim.Adam if phase.optimizer == "adam" else torch.optim.AdamW
    return optimizer_cls(groups, lr=phase.lr, betas=tuple(train.betas))


# ---------------------------------------------------------------- objectives


class Objective:
    """The loss of one training step: ``loss, logits, parts = objective(model, images, targets, phase)``.

    ``parts`` are detached scalars logged beside the loss (``ce``, ``kd``, ``at``, ...).
    """

    def __init__(self, config: ExperimentConfig) -> None:
        self.aux_weight = config.train.aux_weight
        self.criterion = nn.CrossEntropyLoss(label_smoothing=config.train.label_smoothing)

    def parameters(self, phase: Phase) -> list[nn.Parameter]:
        """Trainable parameters outside the model for ``phase`` (imitation adapters)."""
        return []

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass

    def close(self) -> None:
        """Remove any hooks from the networks."""

    def forward(self, model: nn.Module, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        logits, aux = split_output(model(images))
        if self.aux_weight and aux is None:
            raise UserError("train.aux_weight is set but the model returned no auxiliary logits",
                            key="train.aux_weight", hint="build the model with its auxiliary head, or set 0")
        return logits, aux

    def add_aux(self, loss: torch.Tensor, parts: dict[str, torch.Tensor], aux: torch.Tensor | None,
                targets: torch.Tensor) -> torch.Tensor:
        if aux is None or not self.aux_weight:
            return loss
        aux_ce = F.cross_entropy(aux.float(), targets)
        parts["aux"] = aux_ce.detach()
        return loss + self.aux_weight * aux_ce

    def __call__(self, model: nn.Module, images: torch.Tensor, targets: torch.Tensor,
                 phase: Phase) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        logits, aux = self.forward(model, images)
        loss = self.criterion(logits.float(), targets)
        parts = {"ce": loss.detach()} if aux is not None and self.aux_weight else {}
        return self.add_aux(loss, parts, aux, targets), logits, parts


class DistillationObjective(Objective):
    """``alpha * KD + (1 - alpha) * CE + AT`` from a frozen teacher (label smoothing unused)."""

    def __init__(self, config: ExperimentConfig, model: nn.Module, teacher: nn.Module) -> None:
        super().__init__(config)
        d = config.distill
        self.distiller = Distiller(model, teacher, temperature=d.temperature, alpha=d.alpha, at_beta=d.at_beta,
                                   student_taps=d.student_taps, teacher_taps=d.teacher_taps)

    def close(self) -> None:
        self.distiller.close()

    def __call__(self, model, images, targets, phase):
        logits, aux = self.forward(model, images)
        loss, parts = self.distiller.loss(logits, images, targets)
        return self.add_aux(loss, parts, aux, targets), logits, parts


class ImitationObjective(Objective):
    """The loss of the phase's imitation stage; stage 1 also trains the 1x1 adapters."""

    def __init__(self, config: ExperimentConfig, model: nn.Module, teacher: nn.Module,
                 input_shape: tuple[int, int, int], device: torch.device) -> None:
        from .imitation import Imitator

        super().__init__(config)
        im = config.imitation
        sample = torch.zeros(1, *input_shape, device=device)  # only sizes the adapters
        self.imitator = Imitator(model, teacher, sample, tap_names=im.student_taps, teacher_tap_names=im.teacher_taps,
                                 temperature=im.temperature, teacher_forcing=im.teacher_forcing)

    def parameters(self, phase: Phase) -> list[nn.Parameter]:
        return list(self.imitator.adapters.parameters()) if phase.stage == 1 else []

    def state_dict(self) -> dict[str, Any]:
        return {"adapters": self.imitator.adapters.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "adapters" in state:
            self.imitator.adapters.load_state_dict(state["adapters"])

    def close(self) -> None:
        self.imitator.close()

    def __call__(self, model, images, targets, phase):
        loss, parts, logits = self.imitator.step(phase.stage, images, targets)
        return loss, logits, parts


def build_objective(config: ExperimentConfig, model: nn.Module, teacher: nn.Module | None,
                    input_shape: tuple[int, int, int], device: torch.device) -> Objective:
    """The objective the config asks for (validation guarantees a teacher where one is needed)."""
    if config.imitation is not None:
        return ImitationObjective(config, model, teacher, input_shape, device)
    if config.distill is not None:
        return DistillationObjective(config, model, teacher)
    return Objective(config)
