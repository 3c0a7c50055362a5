"""``train.sync_bn``: BatchNorm statistics over the global batch of a data-parallel run.

On CUDA this is torch's own ``nn.SyncBatchNorm``. torch's version refuses CPU tensors, so on
the CPU (gloo ranks) the BatchNorm layers become :class:`GlobalBatchNorm`: the same layer
(same parameters, buffers and state-dict keys, so checkpoints move between the two) whose
training-mode statistics are the mean and biased variance over every rank's samples, computed
in two passes (sum, then centred sum of squares) through a differentiable all-reduce, so the
gradients are those of the global batch, as in ``nn.SyncBatchNorm``. Eval mode and
single-process runs use plain ``F.batch_norm``.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn as nn


class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks whose backward sums the gradients over ranks (each rank's loss depends on
    every rank's samples through the statistics)."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        out = tensor.clone()
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Differentiable sum of ``tensor`` over the default process group."""
    return _AllReduceSum.apply(tensor)


class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm (any dimension) whose training statistics span all ranks; CPU-capable."""

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        syncing = self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
        if not syncing:
            return super().forward(input)
        self._check_input_dim(input)
        dims = [0, *range(2, input.dim())]
        shape = [1, -1] + [1] * (input.dim() - 2)
        x = input.float()
        local = torch.full((1,), float(x.numel() // x.shape[1]), dtype=x.dtype, device=x.device)
        first = all_reduce_sum(torch.cat([x.sum(dims), local]))  # per-channel sums and the sample count
        count = first[-1].detach()
        mean = first[:-1] / count
        centred = x - mean.reshape(shape)
        var = all_reduce_sum((centred * centred).sum(dims)) / count  # biased, as BatchNorm normalises
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                momentum = (1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum)
                unbiased = var * (count / (count - 1)) if count > 1 else var
                self.running_mean.mul_(1 - momentum).add_(mean.detach().to(self.running_mean.dtype), alpha=momentum)
                self.running_var.mul_(1 - momentum).add_(unbiased.detach().to(self.running_var.dtype),
                                                         alpha=momentum)
        out = centred * torch.rsqrt(var + self.eps).reshape(shape)
        if self.affine:
            out = out * self.weight.reshape(shape) + self.bias.reshape(shape)
        return out.to(input.dtype)


def convert(module: nn.Module, device_type: str) -> nn.Module:
    """``module`` with every BatchNorm layer synchronised over the process group (in place where
    possible; returns the module to use)."""
    if device_type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    return _to_global(module)


def _to_global(module: nn.Module) -> nn.Module:
    out = module
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, GlobalBatchNorm):
        out = GlobalBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                              module.track_running_stats)
        if module.affine:
            with torch.no_grad():
                out.weight = module.weight
                out.bias = module.bias
        if module.track_running_stats:
            out.running_mean, out.running_var = module.running_mean, module.running_var
            out.num_batches_tracked = module.num_batches_tracked
        out.training = module.training
    for name, child in module.named_children():
        out.add_module(name, _to_global(child))
    return out
