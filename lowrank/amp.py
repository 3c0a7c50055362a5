"""Mixed precision for the trainer: autocast, the fp16 gradient scaler, clipping and the step.

``train.amp``: ``off`` (float32), ``bf16`` or ``fp16`` autocast, or ``auto`` (bf16 on a CUDA
device that supports it, else off). On CUDA both are
honoured; fp16 also scales the loss with a :class:`torch.amp.GradScaler` (whose state is
checkpointed, so a resumed run keeps its scale). On the CPU, ``bf16`` uses CPU autocast
(slow on most CPUs, but it runs and tests the path) and ``fp16`` is refused with a clear
error: CPU fp16 kernels are incomplete and a scaler buys nothing there.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterable

import torch
import torch.nn as nn

from .errors import UserError

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class Precision:
    """Everything the loop does differently under mixed precision, in one place."""

    def __init__(self, mode: str, device: torch.device) -> None:
        if mode == "auto":  # bf16 where the GPU has it (Ampere and later); float32 on the CPU, where it is faster
            mode = "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "off"
        if mode == "fp16" and device.type != "cuda":
            raise UserError("train.amp=fp16 needs a CUDA device", key="train.amp",
                            hint="use --set train.amp=bf16 (CPU autocast) or off on the CPU")
        self.mode, self.device = mode, device
        self.scaler = torch.amp.GradScaler("cuda") if mode == "fp16" else None

    def autocast(self) -> contextlib.AbstractContextManager:
        """Autocast to the configured dtype for forward passes and losses; a no-op when off."""
        if self.mode == "off":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=DTYPES[self.mode])

    def backward_and_step(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer,
                          params: Iterable[nn.Parameter], grad_clip: float | None) -> None:
        """Backward, optional global-norm clipping (on unscaled gradients), optimizer step."""
        optimizer.zero_grad(set_to_none=True)
        self.backward(loss)
        self.step(optimizer, params, grad_clip)

    def backward(self, loss: torch.Tensor) -> None:
        """Accumulate ``loss``'s gradients (scaled under fp16); call once per micro-batch."""
        (loss if self.scaler is None else self.scaler.scale(loss)).backward()

    def step(self, optimizer: torch.optim.Optimizer, params: Iterable[nn.Parameter],
             grad_clip: float | None) -> None:
        """Optional global-norm clipping (on unscaled gradients), then the optimizer step."""
        if self.scaler is None:
            if grad_clip:
                nn.utils.clip_grad_norm_(list(params), grad_clip)
            optimizer.step()
            return
        if grad_clip:
            self.scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(list(params), grad_clip)
        self.scaler.step(optimizer)  # skipped when the scaled gradients overflowed
        self.scaler.update()

    def state_dict(self) -> dict[str, Any]:
        """The scaler's state (empty without one), for the checkpoint."""
        return self.scaler.state_dict() if self.scaler is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.scaler is not None and state:
            self.scaler.load_state_dict(state)
