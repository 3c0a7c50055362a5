"""Group normal-Jeffreys layers: ``BayesLinear`` and ``BayesConv2d``.

Each layer has Gaussian weights N(mu, sigma^2) and one multiplicative scale z ~ N(mu_z, sigma_z^2)
per group; a group whose log alpha (noise-to-signal of z) is large is pruned.

Which groups, and why:
  BayesLinear  z per INPUT neuron (as the paper and tutorial): pruning input i removes column i,
               and with it output i of the layer before (its row there).
  BayesConv2d  z per OUTPUT channel: pruning channel c removes filter c (and its bias) and, since
               its output is then exactly 0 after ReLU/pooling, input channel c of the next layer.

Training uses local reparameterisation (Kingma et al. 2015): z is sampled per example, then the
pre-activation is sampled from its Gaussian given z (mean x W_mu, variance x^2 sigma^2), so no
weight matrix is ever sampled. At evaluation the posterior means are used: W = mu * mu_z, times
the group ``mask`` (all ones until :func:`lowrank.bayes.prune.apply_masks` sets it).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .kl import gaussian_kl, jeffreys_kl, log_alpha

INIT_Z_STD = 1e-2  # z mean ~ N(1, 1e-2), log-variances ~ N(init_logvar, 1e-2), as the tutorial
VAR_FLOOR = 1e-8  # added to a pre-activation variance before its sqrt: a zero input (padding, ReLU)
#   with no bias has variance 0, where sqrt's gradient is infinite and 0 * inf is NaN


class BayesLayer(nn.Module):
    """What the two layers share: z, the KL, clip_var, posterior moments and the group mask."""

    groups: int
    weight_mu: nn.Parameter
    weight_logvar: nn.Parameter
    bias_mu: nn.Parameter | None
    bias_logvar: nn.Parameter | None

    def _init_bayes(self, weight: torch.Tensor, bias: torch.Tensor | None, groups: int, init_logvar: float) -> None:
        self.groups = groups
        self.weight_mu = nn.Parameter(weight.detach().clone())
        self.weight_logvar = nn.Parameter(torch.empty_like(self.weight_mu).normal_(init_logvar, INIT_Z_STD))
        self.z_mu = nn.Parameter(torch.empty(groups, device=weight.device).normal_(1.0, INIT_Z_STD))
        self.z_logvar = nn.Parameter(torch.empty(groups, device=weight.device).normal_(init_logvar, INIT_Z_STD))
        if bias is not None:
            self.bias_mu = nn.Parameter(bias.detach().clone())
            self.bias_logvar = nn.Parameter(torch.empty_like(self.bias_mu).normal_(init_logvar, INIT_Z_STD))
        else:
            self.register_parameter("bias_mu", None)
            self.register_parameter("bias_logvar", None)
        self.register_buffer("mask", torch.ones(groups, device=weight.device))

    def log_alpha(self) -> torch.Tensor:
        return log_alpha(self.z_mu, self.z_logvar)

    def kl(self) -> torch.Tensor:
        """KL(q || p) of this layer: the groups' normal-Jeffreys term plus the weights' and biases'."""
        total = jeffreys_kl(self.log_alpha()) + gaussian_kl(self.weight_mu, self.weight_logvar)
        if self.bias_mu is not None:
            total = total + gaussian_kl(self.bias_mu, self.bias_logvar)
        return total

    @torch.no_grad()
    def clip_var(self, max_var: float) -> None:
        """Clamp the weights' posterior variance to at most ``max_var`` (the tutorial's clip_var)."""
        self.weight_logvar.clamp_(max=math.log(max_var))

    def _z_shape(self) -> tuple[int, ...]:
        raise NotImplementedError

    def z_mean(self) -> torch.Tensor:
        """mu_z times the mask, shaped to broadcast over the weight."""
        return (self.z_mu * self.mask).reshape(self._z_shape())

    def posterior(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Marginal posterior mean and variance of each weight w = z * w~ (the tutorial's formula)."""
        z_mu = self.z_mu.reshape(self._z_shape())
        z_var = self.z_logvar.exp().reshape(self._z_shape())
        w_var = self.weight_logvar.exp()
        mean = self.weight_mu * z_mu
        var = z_mu.pow(2) * w_var + z_var * self.weight_mu.pow(2) + z_var * w_var
        return mean, var

    def mean_weight(self) -> torch.Tensor:
        """The weight used at evaluation: posterior mean times the group mask."""
        return self.weight_mu * self.z_mean()

    def _sample_z(self, batch: int, shape: tuple[int, ...]) -> torch.Tensor:
        std = (0.5 * self.z_logvar).exp()
        return (self.z_mu + std * torch.randn(batch, self.groups, device=std.device, dtype=std.dtype)).reshape(shape)

    def log_variances(self) -> dict[str, torch.Tensor]:
        out = {"weight_logvar": self.weight_logvar, "z_logvar": self.z_logvar}
        if self.bias_logvar is not None:
            out["bias_logvar"] = self.bias_logvar
        return out


class BayesLinear(BayesLayer):
    """A linear layer with a group scale z per input neuron (in_features groups)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, init_logvar: float = -9.0,
                 weight: torch.Tensor | None = None, bias_value: torch.Tensor | None = None) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        if weight is None:
            template = nn.Linear(in_features, out_features, bias=bias)
            weight, bias_value = template.weight, template.bias
        self._init_bayes(weight, bias_value if bias else None, in_features, init_logvar)

    @classmethod
    def from_dense(cls, layer: nn.Linear, init_logvar: float = -9.0) -> "BayesLinear":
        return cls(layer.in_features, layer.out_features, bias=layer.bias is not None, init_logvar=init_logvar,
                   weight=layer.weight, bias_value=layer.bias)

    def _z_shape(self) -> tuple[int, ...]:
        return (1, self.in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return F.linear(x, self.mean_weight(), self.bias_mu)
        z = self._sample_z(x.shape[0], (x.shape[0],) + (1,) * (x.dim() - 2) + (self.in_features,))
        xz = x * z
        mean = F.linear(xz, self.weight_mu, self.bias_mu)
        var = F.linear(xz.pow(2), self.weight_logvar.exp(),
                       None if self.bias_logvar is None else self.bias_logvar.exp())
        return mean + (var + VAR_FLOOR).sqrt() * torch.randn_like(mean)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias_mu is not None}"


class BayesConv2d(BayesLayer):
    """A 2-d convolution (groups=1) with a group scale z per output channel; z also scales the bias."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int], stride=1, padding=0,
                 dilation=1, bias: bool = True, init_logvar: float = -9.0, weight: torch.Tensor | None = None,
                 bias_value: torch.Tensor | None = None) -> None:
        super().__init__()
        if weight is None:
            template = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, dilation, bias=bias)
            weight, bias_value = template.weight, template.bias
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size = tuple(weight.shape[2:])
        self.stride, self.padding, self.dilation = stride, padding, dilation
        self._init_bayes(weight, bias_value if bias else None, out_channels, init_logvar)

    @classmethod
    def from_dense(cls, layer: nn.Conv2d, init_logvar: float = -9.0) -> "BayesConv2d":
        if layer.groups != 1 or layer.padding_mode != "zeros":
            raise ValueError("BayesConv2d converts convolutions with groups=1 and zero padding only")
        return cls(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride, layer.padding,
                   layer.dilation, bias=layer.bias is not None, init_logvar=init_logvar, weight=layer.weight,
                   bias_value=layer.bias)

    def _z_shape(self) -> tuple[int, ...]:
        return (self.out_channels, 1, 1, 1)

    def _conv(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        return F.conv2d(x, weight, bias, self.stride, self.padding, self.dilation)

    def mean_bias(self) -> torch.Tensor | None:
        return None if self.bias_mu is None else self.bias_mu * self.z_mu * self.mask

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return self._conv(x, self.mean_weight(), self.mean_bias())
        mean = self._conv(x, self.weight_mu, self.bias_mu)
        var = self._conv(x.pow(2), self.weight_logvar.exp(),
                         None if self.bias_logvar is None else self.bias_logvar.exp())
        z = self._sample_z(x.shape[0], (x.shape[0], self.out_channels, 1, 1))
        return z * (mean + (var + VAR_FLOOR).sqrt() * torch.randn_like(mean))

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, bias={self.bias_mu is not None}")
