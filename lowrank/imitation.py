"""Layer-wise imitation: "Go Wide, Then Narrow" (Zhou et al., ICML 2020; research notes 003).

A thin student learns from a wide teacher in three stages; the trainer owns the loop and
the epochs and calls :meth:`Imitator.step` with the stage number:

1. **Block imitation** - each student block (the module of a tap: a WRN group, a ResNet
   stage) is trained so that its output matches the teacher block's output, MSE. Where
   the widths differ, a learnt 1x1 conv adapter ``U_k`` (student width -> teacher width)
   sits between the student's block output and the loss. With ``teacher_forcing`` (the
   paper's setting) block k >= 2 is fed the teacher's block k-1 output cast back to the
   student width by ``pinv(U_{k-1})`` instead of its own input, so the blocks learn in
   parallel; the first block and the stem learn from the images.
2. **Output imitation** - the whole student on the teacher's softened outputs:
   ``T^2 * KL(softmax(t/T) || softmax(s/T))``.
3. **Fine-tuning** on the labels (cross-entropy).

Merging the adapters away. Tying the cast-back to ``pinv(U)`` makes the chain consistent
without any merge: if ``U_{k-1} s ~ t`` then ``pinv(U_{k-1}) t ~ s``, the input block k
gets once the student runs on its own; the ``U_k`` only ever enter the loss and are
dropped after stage 1. A linear merge into the network is possible only where a
convolution meets the adapter with nothing non-linear between:
:func:`merge_adapter_into_conv` (conv then adapter), :func:`merge_adapter_before_conv`
(adapter then conv), and :func:`fold_bn_into_conv` first when an eval-mode BN sits
between (BN is then affine). With a ReLU between - or a residual sum followed by a
pre-activation BN-ReLU, as at every WRN/ResNet block boundary - no exact merge exists;
that is why the default design keeps the adapters out of the network.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .distill import TapRecorder, freeze, resolve_module, split_output
from .errors import UserError

# ---------------------------------------------------------------------------------------
# Blocks and adapters
# ---------------------------------------------------------------------------------------


@dataclass
class BlockPair:
    """A student block and the teacher block it imitates (modules of matching taps)."""

    student_name: str
    teacher_name: str
    student: nn.Module
    teacher: nn.Module


def block_pairs(student: nn.Module, teacher: nn.Module, tap_names: Sequence[str] | None = None,
                teacher_tap_names: Sequence[str] | None = None) -> list[BlockPair]:
    """Pair the student's tap modules with the teacher's, in order (defaults: ``tap_names``
    of each model; the teacher's default to the student's names)."""
    s_names = tuple(tap_names if tap_names is not None else getattr(student, "tap_names", ()))
    t_names = tuple(teacher_tap_names if teacher_tap_names is not None
                    else getattr(teacher, "tap_names", s_names))
    if not s_names or len(s_names) != len(t_names):
        raise UserError(f"layer-wise imitation needs matching blocks, got {len(s_names)} student and "
                        f"{len(t_names)} teacher taps", hint="give equally long tap lists")
    return [BlockPair(s, t, resolve_module(student, s), resolve_module(teacher, t))
            for s, t in zip(s_names, t_names)]


@torch.no_grad()
def tap_shapes(model: nn.Module, tap_names: Sequence[str], sample_input: torch.Tensor) -> list[torch.Size]:
    """Shapes of the tap outputs for ``sample_input`` (one eval-mode forward pass)."""
    was_training = model.training
    model.eval()
    try:
        with TapRecorder(model, tap_names) as recorder:
            model(sample_input)
            return [f.shape for f in recorder.features]
    finally:
        model.train(was_training)


def conv1x1(in_channels: int, out_channels: int) -> nn.Conv2d:
    """A bias-free 1x1 convolution: a per-pixel linear map between widths (an adapter)."""
    return nn.Conv2d(in_channels, out_channels, 1, bias=False)


class Adapters(nn.Module):
    """One adapter per block: ``to_teacher[k]`` maps student block k's output to the
    teacher's width (a 1x1 conv, or ``nn.Identity`` when the widths agree)."""

    def __init__(self, student_channels: Sequence[int], teacher_channels: Sequence[int]) -> None:
        super().__init__()
        self.to_teacher = nn.ModuleList(
            nn.Identity() if s == t else conv1x1(s, t) for s, t in zip(student_channels, teacher_channels)
        )

    def cast_back(self, k: int, teacher_features: torch.Tensor) -> torch.Tensor:
        """Teacher block k's output at the student width: ``pinv(U_k) t`` (no gradient)."""
        adapter = self.to_teacher[k]
        if isinstance(adapter, nn.Identity):
            return teacher_features
        with torch.no_grad():
            u = adapter.weight.float().flatten(1)  # (teacher, student)
            v = torch.linalg.pinv(u).to(teacher_features.dtype)  # (student, teacher)
            return F.conv2d(teacher_features, v[:, :, None, None])


def build_adapters(student: nn.Module, teacher: nn.Module, pairs: Sequence[BlockPair],
                   sample_input: torch.Tensor) -> Adapters:
    """Adapters for ``pairs`` sized from one forward pass of each model on ``sample_input``;
    a student/teacher pair of taps at different resolutions is an error."""
    s_shapes = tap_shapes(student, [p.student_name for p in pairs], sample_input)
    t_shapes = tap_shapes(teacher, [p.teacher_name for p in pairs], sample_input)
    for pair, s, t in zip(pairs, s_shapes, t_shapes):
        if s[2:] != t[2:]:
            raise UserError(f"block {pair.student_name!r} outputs {tuple(s[2:])} pixels but the teacher's "
                            f"{pair.teacher_name!r} outputs {tuple(t[2:])}",
                            hint="layer-wise imitation pairs blocks at the same resolution")
    adapters = Adapters([s[1] for s in s_shapes], [t[1] for t in t_shapes])
    return adapters.to(sample_input.device)


# ---------------------------------------------------------------------------------------
# The stage losses
# ---------------------------------------------------------------------------------------


def block_imitation_loss(student_feats: Sequence[torch.Tensor], teacher_feats: Sequence[torch.Tensor],
                         adapters: Adapters) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Stage 1: ``sum_k mean((U_k s_k - t_k)^2)`` over the blocks."""
    terms = [F.mse_loss(adapter(s).float(), t.float().detach())
             for adapter, s, t in zip(adapters.to_teacher, student_feats, teacher_feats)]
    total = torch.stack(terms).sum()
    parts = {"mse": total.detach()} | {f"mse_{k}": term.detach() for k, term in enumerate(terms)}
    return total, parts


def output_imitation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                          temperature: float = 1.0) -> torch.Tensor:
    """Stage 2: ``T^2 * KL(softmax(t/T) || softmax(s/T))``, batch mean."""
    log_p = F.log_softmax(student_logits.float() / temperature, dim=1)
    log_q = F.log_softmax(teacher_logits.float().detach() / temperature, dim=1)
    return F.kl_div(log_p, log_q, reduction="batchmean", log_target=True) * temperature ** 2


def imitation_loss(stage: int, *, student_logits: torch.Tensor, targets: torch.Tensor,
                   teacher_logits: torch.Tensor | None = None, student_feats: Sequence[torch.Tensor] = (),
                   teacher_feats: Sequence[torch.Tensor] = (), adapters: Adapters | None = None,
                   temperature: float = 1.0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The loss of ``stage`` (1, 2 or 3) and its parts; ``ce`` is always logged."""
    if stage not in STAGE_LOSSES:
        raise ValueError(f"imitation stage must be one of {sorted(STAGE_LOSSES)}, got {stage}")
    ce = F.cross_entropy(student_logits.float(), targets)
    total, parts = STAGE_LOSSES[stage](student_logits=student_logits, targets=targets, ce=ce,
                                       teacher_logits=teacher_logits, student_feats=student_feats,
                                       teacher_feats=teacher_feats, adapters=adapters, temperature=temperature)
    return total, {"ce": ce.detach()} | parts


def _stage1(*, student_feats, teacher_feats, adapters, **_: Any):
    return block_imitation_loss(student_feats, teacher_feats, adapters)


def _stage2(*, student_logits, teacher_logits, temperature, **_: Any):
    kl = output_imitation_loss(student_logits, teacher_logits, temperature)
    return kl, {"kl": kl.detach()}


def _stage3(*, ce, **_: Any):
    return ce, {}


STAGE_LOSSES: dict[int, Callable[..., tuple[torch.Tensor, dict[str, torch.Tensor]]]] = {
    1: _stage1, 2: _stage2, 3: _stage3,
}


# ---------------------------------------------------------------------------------------
# The imitator the trainer calls
# ---------------------------------------------------------------------------------------


class Imitator:
    """Runs teacher and student for one imitation step of a given stage.

    ``loss, parts, logits = imitator.step(stage, inputs, targets)``. In stage 1 the
    trainer optimises the student's parameters plus ``imitator.adapters.parameters()``
    (the paper: no weight decay, cosine lr); after stage 1 the adapters are not needed.
    Teacher forcing needs consecutive blocks (block k consumes block k-1's output, as the
    groups of WRN/ResNet); a block that does not (a DARTS cell) is a :class:`UserError`
    at the first stage-1 step - use ``teacher_forcing=False`` there.
    """

    def __init__(self, student: nn.Module, teacher: nn.Module, sample_input: torch.Tensor, *,
                 tap_names: Sequence[str] | None = None, teacher_tap_names: Sequence[str] | None = None,
                 temperature: float = 1.0, teacher_forcing: bool = True) -> None:
        self.student = student
        self.teacher = freeze(teacher)
        self.temperature = temperature
        self.teacher_forcing = teacher_forcing
        self.pairs = block_pairs(student, teacher, tap_names, teacher_tap_names)
        self.adapters = build_adapters(student, teacher, self.pairs, sample_input)
        self.student_recorder = TapRecorder(student, [p.student_name for p in self.pairs])
        self.teacher_recorder = TapRecorder(teacher, [p.teacher_name for p in self.pairs])
        self._forcing = False
        self._handles = [pair.student.register_forward_pre_hook(self._force_hook(k))
                         for k, pair in enumerate(self.pairs) if k > 0]

    def _force_hook(self, k: int):
        prev_student = self.pairs[k - 1].student_name
        prev_teacher = self.pairs[k - 1].teacher_name

        def hook(module: nn.Module, args: tuple) -> tuple | None:
            if not self._forcing:
                return None
            own = self.student_recorder.get(prev_student)
            if len(args) != 1 or args[0] is not own:
                raise UserError(f"teacher forcing needs block {self.pairs[k].student_name!r} to take exactly the "
                                f"output of block {prev_student!r} as its input",
                                hint="set teacher_forcing to false for this network (e.g. DARTS cells)")
            return (self.adapters.cast_back(k - 1, self.teacher_recorder.get(prev_teacher)),)

        return hook

    def step(self, stage: int, inputs: torch.Tensor,
             targets: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
        """Forward teacher then student for ``stage``; returns loss, parts, student logits."""
        t_logits = None
        if stage in (1, 2):
            with torch.no_grad():
                self.teacher.eval()
                t_logits = split_output(self.teacher(inputs))[0]
        self._forcing = stage == 1 and self.teacher_forcing
        try:
            s_logits = split_output(self.student(inputs))[0]
        finally:
            self._forcing = False
        feats: dict[str, Any] = {}
        if stage == 1:
            feats = {"student_feats": self.student_recorder.features,
                     "teacher_feats": self.teacher_recorder.features, "adapters": self.adapters}
        loss, parts = imitation_loss(stage, student_logits=s_logits, targets=targets, teacher_logits=t_logits,
                                     temperature=self.temperature, **feats)
        self.student_recorder.clear()
        self.teacher_recorder.clear()
        return loss, parts, s_logits

    def close(self) -> None:
        """Remove every hook from student and teacher."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self.student_recorder.remove()
        self.teacher_recorder.remove()


# ---------------------------------------------------------------------------------------
# Linear merges
# ---------------------------------------------------------------------------------------


def _check_adapter(adapter: nn.Conv2d) -> None:
    if (adapter.kernel_size != (1, 1) or adapter.stride != (1, 1) or adapter.groups != 1
            or adapter.padding not in ((0, 0), "valid")):
        raise ValueError("an adapter is a 1x1, stride-1, ungrouped, unpadded convolution")


def _merged_conv(conv: nn.Conv2d, adapter: nn.Conv2d, in_channels: int, out_channels: int) -> nn.Conv2d:
    """An empty conv with ``conv``'s geometry (kernel, stride, padding, dilation, device,
    dtype) and a bias when either of the two merged layers has one."""
    return nn.Conv2d(in_channels, out_channels, conv.kernel_size, stride=conv.stride, padding=conv.padding,
                     dilation=conv.dilation, padding_mode=conv.padding_mode,
                     bias=conv.bias is not None or adapter.bias is not None,
                     device=conv.weight.device, dtype=conv.weight.dtype)


def merge_adapter_into_conv(conv: nn.Conv2d, adapter: nn.Conv2d) -> nn.Conv2d:
    """One conv computing ``adapter(conv(x))`` exactly: ``W' = A W``, ``b' = A b + a``.

    ``conv`` is any ungrouped convolution (kernel, stride, padding, dilation kept);
    ``adapter`` a 1x1 conv on its output with nothing between them.
    """
    _check_adapter(adapter)
    if conv.groups != 1:
        raise ValueError("cannot merge into a grouped convolution (the product is dense)")
    a = adapter.weight.detach().flatten(1)  # (out, mid)
    merged = _merged_conv(conv, adapter, conv.in_channels, adapter.out_channels)
    with torch.no_grad():
        merged.weight.copy_(torch.einsum("om,mikl->oikl", a, conv.weight.detach()))
        if merged.bias is not None:
            bias = torch.zeros(adapter.out_channels, device=a.device, dtype=a.dtype)
            if conv.bias is not None:
                bias += a @ conv.bias.detach()
            if adapter.bias is not None:
                bias += adapter.bias.detach()
            merged.bias.copy_(bias)
    return merged


def merge_adapter_before_conv(adapter: nn.Conv2d, conv: nn.Conv2d) -> nn.Conv2d:
    """One conv computing ``conv(adapter(x))`` exactly: ``W' = W A`` over input channels.

    Exact only for a bias-free adapter when ``conv`` pads (a padded border would see the
    adapter's bias in the original but zeros in the merge), so a biased one is refused then.
    """
    _check_adapter(adapter)
    if conv.groups != 1:
        raise ValueError("cannot merge into a grouped convolution (the product is dense)")
    pads = conv.padding == "same" or (isinstance(conv.padding, tuple) and any(conv.padding))
    if adapter.bias is not None and pads:
        raise ValueError("a biased adapter before a padded conv has no exact merge")
    a = adapter.weight.detach().flatten(1)  # (mid, in)
    merged = _merged_conv(conv, adapter, adapter.in_channels, conv.out_channels)
    with torch.no_grad():
        merged.weight.copy_(torch.einsum("omkl,mi->oikl", conv.weight.detach(), a))
        if merged.bias is not None:
            bias = torch.zeros(conv.out_channels, device=a.device, dtype=a.dtype)
            if conv.bias is not None:
                bias += conv.bias.detach()
            if adapter.bias is not None:
                bias += conv.weight.detach().sum(dim=(2, 3)) @ adapter.bias.detach()
            merged.bias.copy_(bias)
    return merged


def fold_bn_into_conv(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """One conv computing eval-mode ``bn(conv(x))``: scale ``gamma / sqrt(var + eps)`` per
    output channel, shift ``beta - mean * scale`` (the running statistics are frozen in)."""
    scale = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps) if bn.affine else 1 / torch.sqrt(
        bn.running_var + bn.eps)
    shift = (bn.bias.detach() if bn.affine else 0) - bn.running_mean * scale
    folded = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride,
                       padding=conv.padding, dilation=conv.dilation, groups=conv.groups,
                       padding_mode=conv.padding_mode, bias=True,
                       device=conv.weight.device, dtype=conv.weight.dtype)
    with torch.no_grad():
        folded.weight.copy_(conv.weight.detach() * scale.view(-1, 1, 1, 1))
        base = conv.bias.detach() if conv.bias is not None else torch.zeros_like(scale)
        folded.bias.copy_(base * scale + shift)
    return folded
