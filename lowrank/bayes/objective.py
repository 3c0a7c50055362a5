"""The BC-GNJ objective: the run's loss (CE, or distillation) + kl_weight * KL / N.

N is the number of TRAINING EXAMPLES, never the number of batches: the per-example loss is the
negative ELBO divided by N (research notes 004, Dec 2017: dividing by ``len(trainloader)`` made
the ELBO 200 times too large). An optional linear KL warm-up scales the KL term from 0 to
kl_weight over ``warmup_epochs`` (fractional epochs, per step).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from .layers import BayesLayer


def training_examples(dataset: Any) -> int:
    """N for the objective: the examples of the training set - pass the dataset, not its loader
    (``len(loader)`` counts batches, the notes' bug; a loader is refused)."""
    if hasattr(dataset, "batch_size") or hasattr(dataset, "batch_sampler"):
        raise TypeError("training_examples takes the training dataset, not a loader (len(loader) counts batches)")
    return len(dataset)


class BayesObjective:
    """Wraps the run's objective (same call signature) and adds the scaled KL of the Bayesian layers."""

    def __init__(self, inner: Any, layers: list[BayesLayer], kl_weight: float, examples: int,
                 warmup_epochs: float = 0.0) -> None:
        if examples < 1:
            raise ValueError("the number of training examples must be positive")
        self.inner, self.layers = inner, list(layers)
        self.kl_weight, self.examples, self.warmup_epochs = kl_weight, examples, warmup_epochs
        self.progress = 0.0  # epochs done, fractional (set by the loop before each step)

    def kl_factor(self) -> float:
        """kl_weight times the warm-up ramp min(1, epochs done / warmup_epochs)."""
        if self.warmup_epochs <= 0:
            return self.kl_weight
        return self.kl_weight * min(1.0, self.progress / self.warmup_epochs)

    def kl(self) -> torch.Tensor:
        return torch.stack([layer.kl() for layer in self.layers]).sum()

    def __call__(self, model: nn.Module, images: torch.Tensor, targets: torch.Tensor, phase: Any):
        loss, logits, parts = self.inner(model, images, targets, phase)
        kl = self.kl()
        term = self.kl_factor() * kl / self.examples
        parts = {**parts, "nll": loss.detach(), "kl": kl.detach(), "kl_term": term.detach()}
        return loss + term, logits, parts

    # the rest of the objective interface belongs to the wrapped objective
    def parameters(self, phase: Any) -> list[nn.Parameter]:
        return self.inner.parameters(phase)

    def state_dict(self) -> dict[str, Any]:
        return self.inner.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.inner.load_state_dict(state)

    def close(self) -> None:
        self.inner.close()
