"""Distillation: Hinton knowledge distillation plus attention transfer, and teacher loading.

- KD: Hinton, Vinyals & Dean, "Distilling the Knowledge in a Neural Network", 2015.
- AT: Zagoruyko & Komodakis, "Paying More Attention to Attention: Improving the
  Performance of Convolutional Neural Networks via Attention Transfer", ICLR 2017
  (code: github.com/szagoruyko/attention-transfer).

The trainer keeps the forward pass: it builds a :class:`Distiller` once (after
substitution), runs the student itself, and asks ``distiller.loss(logits, inputs,
targets)`` for the total loss and its parts. The teacher runs in eval mode, without
gradients; its own test error is worth logging first (:func:`evaluate_teacher`): the
research notes found a teacher 0.25% worse than claimed once loaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .errors import UserError

# ---------------------------------------------------------------------------------------
# Losses
# ---------------------------------------------------------------------------------------


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float, alpha: float,
            targets: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Hinton KD mixed with cross-entropy: ``alpha * KD + (1 - alpha) * CE``.

    Convention: ``KD = T^2 * KL(softmax(t / T) || softmax(s / T))``, summed over classes
    and averaged over the batch ("batchmean"; the 2017 AT and pytorch-moonshine code
    used ``kl_div``'s element mean, i.e. also divided by the number of classes C, times
    2 T^2: 2/C of this KD term). The T^2 keeps the soft-target gradients on the scale of
    the CE gradients as T changes. CE is the batch mean. Both are computed in float32.
    Returns the total and ``{"ce": ..., "kd": ...}`` (unweighted, detached).
    """
    s = student_logits.float()
    ce = F.cross_entropy(s, targets)
    if alpha == 0:
        kd = s.new_zeros(())
    else:
        log_p = F.log_softmax(s / temperature, dim=1)
        log_q = F.log_softmax(teacher_logits.float() / temperature, dim=1)
        kd = F.kl_div(log_p, log_q, reduction="batchmean", log_target=True) * temperature ** 2
    total = alpha * kd + (1.0 - alpha) * ce
    return total, {"ce": ce.detach(), "kd": kd.detach()}


def attention_map(features: torch.Tensor) -> torch.Tensor:
    """Activation-based spatial attention (N, C, H, W) -> (N, H*W): the channel mean of
    squared activations, flattened and L2-normalised per sample (AT's ``at(x)``, p = 2)."""
    return F.normalize(features.float().pow(2).mean(1).flatten(1), dim=1)


def _energy(features: torch.Tensor, size: tuple[int, int] | None) -> torch.Tensor:
    """The un-normalised map (N, 1, H, W), average-pooled to ``size`` when given."""
    energy = features.float().pow(2).mean(1, keepdim=True)
    if size is not None and tuple(energy.shape[-2:]) != size:
        energy = F.adaptive_avg_pool2d(energy, size)
    return energy


def at_tap_loss(student_features: torch.Tensor, teacher_features: torch.Tensor) -> torch.Tensor:
    """``mean over batch and positions of (a_s - a_t)^2`` for one tap (AT's ``at_loss``).

    Channel counts may differ (the map averages over channels). When the spatial sizes
    differ, the larger channel-mean-of-squares map is adaptive-average-pooled to the
    smaller size *before* normalisation, so both maps cover the same image regions.
    """
    hs, ws = student_features.shape[-2:]
    ht, wt = teacher_features.shape[-2:]
    size = (min(hs, ht), min(ws, wt))
    a_s = F.normalize(_energy(student_features, size).flatten(1), dim=1)
    a_t = F.normalize(_energy(teacher_features, size).flatten(1), dim=1)
    return (a_s - a_t).pow(2).mean()


def at_betas(beta: float, n_taps: int) -> list[float]:
    """Per-tap AT weights from the published ``beta`` (1e3 in the AT paper): ``beta * 3 / n_taps`` each.

    Convention: the code the published results came from adds ``beta * sum_k at_loss_k``
    over the three WRN groups (attention-transfer ``cifar.py``: ``opt.beta * sum(loss_groups)``;
    the paper's eq. 2 writes beta/2, the code does not halve it), and deficient-efficient
    ``main.py`` (pytorch-moonshine) adds ``beta * 3 / n_taps * at_loss_k`` per tap so that
    networks with more or fewer taps get the same total weight. Each tap here gets
    ``beta * 3 / n_taps``: for 3 taps exactly AT's ``beta``, and beta=1e3 means what both codes mean.
    """
    if n_taps == 0:
        return []
    return [beta * 3 / n_taps] * n_taps


def at_loss(student_feats: Sequence[torch.Tensor], teacher_feats: Sequence[torch.Tensor],
            betas: Sequence[float]) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Attention-transfer loss ``sum_k betas[k] * at_tap_loss(s_k, t_k)`` (see
    :func:`at_betas` for the weights). Returns the total and the unweighted per-tap terms."""
    if not (len(student_feats) == len(teacher_feats) == len(betas)):
        raise ValueError(f"AT needs as many student taps ({len(student_feats)}), teacher taps "
                         f"({len(teacher_feats)}) and betas ({len(betas)})")
    terms = [at_tap_loss(s, t) for s, t in zip(student_feats, teacher_feats)]
    if not terms:
        return torch.zeros(()), []
    total = sum((b * term for b, term in zip(betas, terms)), start=terms[0].new_zeros(()))
    return total, terms


# ---------------------------------------------------------------------------------------
# Recording intermediate outputs
# ---------------------------------------------------------------------------------------


def resolve_module(model: nn.Module, name: str) -> nn.Module:
    """The submodule ``name`` of ``model``, also through DataParallel/DDP (``module.``) and
    ``torch.compile`` (``_orig_mod.``) wrappers; a clear error names the missing tap."""
    modules = dict(model.named_modules())
    for prefix in ("", "module.", "_orig_mod.", "_orig_mod.module.", "module._orig_mod."):
        if prefix + name in modules:
            return modules[prefix + name]
    raise UserError(f"the network has no submodule {name!r} to use as a tap",
                    hint="tap names are qualified module names, e.g. 'group1' or 'cells.5'; "
                         "see the model's tap_names")


class TapRecorder:
    """Forward hooks that keep the latest output of each tap module, in tap order.

    ``recorder.features`` is the list of outputs of the last forward pass. Works on
    substituted networks (substitution replaces convolutions inside the taps, not the tap
    modules). Use as a context manager or call :meth:`remove`; :meth:`clear` drops the
    references after the loss is computed.
    """

    def __init__(self, model: nn.Module, tap_names: Iterable[str]) -> None:
        self.tap_names = tuple(tap_names)
        self._outputs: dict[str, torch.Tensor] = {}
        self._handles = []
        for name in self.tap_names:
            module = resolve_module(model, name)
            self._handles.append(module.register_forward_hook(self._hook(name)))

    def _hook(self, name: str):
        def hook(module: nn.Module, inputs: Any, output: Any) -> None:
            self._outputs[name] = output[0] if isinstance(output, (tuple, list)) else output
        return hook

    @property
    def features(self) -> list[torch.Tensor]:
        """Tap outputs of the last forward pass, in ``tap_names`` order."""
        missing = [name for name in self.tap_names if name not in self._outputs]
        if missing:
            raise RuntimeError(f"taps {missing} did not run in the last forward pass")
        return [self._outputs[name] for name in self.tap_names]

    def get(self, name: str) -> torch.Tensor | None:
        """The last output of tap ``name``, or None if it has not run since :meth:`clear`."""
        return self._outputs.get(name)

    def clear(self) -> None:
        """Forget the recorded outputs (frees their memory before the next step)."""
        self._outputs.clear()

    def remove(self) -> None:
        """Remove the hooks."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self.clear()

    def __enter__(self) -> "TapRecorder":
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


def split_output(output: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(logits, aux_logits or None)`` from a model output (auxiliary heads return a pair)."""
    if isinstance(output, (tuple, list)):
        return output[0], (output[1] if len(output) > 1 else None)
    return output, None


# ---------------------------------------------------------------------------------------
# The distiller the trainer calls
# ---------------------------------------------------------------------------------------


class Distiller:
    """KD + AT from a frozen teacher, for a student whose forward the trainer runs.

    Per step::

        logits, aux = split_output(student(inputs))   # the student's taps are recorded
        loss, parts = distiller.loss(logits, inputs, targets)

    ``parts`` holds detached terms: ``ce`` and ``kd`` unweighted (before alpha), ``at`` the
    beta-weighted AT term as added to the loss (0 when disabled), ``at_k`` the unweighted
    per-tap AT losses. So ``loss = alpha*kd + (1-alpha)*ce + at``. ``at_beta`` follows the published scale (AT: 1e3), see
    :func:`at_betas`. Taps default to each model's ``tap_names``; student and teacher
    must have as many taps.
    """

    def __init__(self, student: nn.Module, teacher: nn.Module, *, temperature: float = 4.0, alpha: float = 0.9,
                 at_beta: float = 0.0, student_taps: Sequence[str] | None = None,
                 teacher_taps: Sequence[str] | None = None) -> None:
        self.teacher = freeze(teacher)
        self.temperature = temperature
        self.alpha = alpha
        self.at_beta = at_beta
        self.student_recorder: TapRecorder | None = None
        self.teacher_recorder: TapRecorder | None = None
        if at_beta > 0:
            s_taps = tuple(student_taps if student_taps is not None else getattr(student, "tap_names", ()))
            t_taps = tuple(teacher_taps if teacher_taps is not None else getattr(teacher, "tap_names", ()))
            if not s_taps or len(s_taps) != len(t_taps):
                raise UserError(f"attention transfer needs the same number of student and teacher taps, got "
                                f"{len(s_taps)} and {len(t_taps)}",
                                hint="set distill.at_beta to 0, or give tap lists of equal length")
            self.student_recorder = TapRecorder(student, s_taps)
            self.teacher_recorder = TapRecorder(teacher, t_taps)
            self.betas = at_betas(at_beta, len(s_taps))

    @torch.no_grad()
    def teacher_logits(self, inputs: torch.Tensor) -> torch.Tensor:
        """The teacher's logits (eval mode, no gradients); its taps are recorded."""
        self.teacher.eval()
        return split_output(self.teacher(inputs))[0]

    def loss(self, student_logits: torch.Tensor, inputs: torch.Tensor,
             targets: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Total ``alpha*KD + (1-alpha)*CE + AT`` for the student output just computed."""
        needs_teacher = self.alpha != 0 or self.student_recorder is not None
        t_logits = self.teacher_logits(inputs) if needs_teacher else student_logits
        total, parts = kd_loss(student_logits, t_logits, self.temperature, self.alpha, targets)
        parts["at"] = total.new_zeros(()).detach()
        if self.student_recorder is not None and self.teacher_recorder is not None:
            at_total, terms = at_loss(self.student_recorder.features, self.teacher_recorder.features, self.betas)
            total = total + at_total
            parts["at"] = at_total.detach()
            for k, term in enumerate(terms):
                parts[f"at_{k}"] = term.detach()
            self.student_recorder.clear()
            self.teacher_recorder.clear()
        return total, parts

    def close(self) -> None:
        """Remove the hooks from student and teacher."""
        for recorder in (self.student_recorder, self.teacher_recorder):
            if recorder is not None:
                recorder.remove()


def freeze(model: nn.Module) -> nn.Module:
    """Eval mode and no gradients: how a teacher is used."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


@torch.no_grad()
def evaluate_teacher(teacher: nn.Module, loader: Iterable, device: torch.device | str) -> tuple[float, float]:
    """Top-1 and top-5 error (percent) of ``teacher`` over ``loader`` of (inputs, targets)."""
    teacher.eval()
    wrong1 = wrong5 = total = 0
    for inputs, targets in loader:
        inputs, targets = inputs.to(device, non_blocking=True), targets.to(device, non_blocking=True)
        logits = split_output(teacher(inputs))[0]
        k = min(5, logits.shape[1])
        top = logits.topk(k, dim=1).indices
        hit = top.eq(targets.view(-1, 1))
        wrong1 += int((~hit[:, 0]).sum())
        wrong5 += int((~hit.any(dim=1)).sum())
        total += targets.numel()
    if total == 0:
        raise ValueError("evaluate_teacher got an empty loader")
    return 100.0 * wrong1 / total, 100.0 * wrong5 / total


# ---------------------------------------------------------------------------------------
# Loading weights
# ---------------------------------------------------------------------------------------


def _read_state_dict(path: Path, what: str, contents: Any = None) -> dict[str, torch.Tensor]:
    """The state dict in ``path`` (or in its already loaded ``contents``), prefixes removed."""
    from .safeload import load_file

    obj = load_file(path, what=what) if contents is None else contents  # weights only: never runs code
    if isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        obj = obj["model"]
    elif isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise UserError(f"{what} is not a state dict (nor a checkpoint with a 'model' state dict)",
                        file=str(path))
    # Checkpoints saved from DataParallel/DDP or torch.compile carry a prefix on every key.
    for prefix in ("module.", "_orig_mod."):
        if obj and all(key.startswith(prefix) for key in obj):
            obj = {key[len(prefix):]: value for key, value in obj.items()}
    return obj


def load_weights(model: nn.Module, path: str | Path, *, what: str = "checkpoint", check_only: bool = False,
                 contents: Any = None) -> None:
    """Load a local state dict file (raw, or a checkpoint dict with key ``"model"``) into
    ``model``, strictly; a missing file or mismatched keys/shapes is a :class:`UserError`.
    ``contents``: the file as :func:`lowrank.safeload.load_file` already returned it."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"{what} file not found", file=str(path),
                        hint="give the path of a local state-dict file; nothing is downloaded")
    if check_only:
        return
    state = _read_state_dict(path, what, contents)
    expected = model.state_dict()
    missing = [key for key in expected if key not in state]
    unexpected = [key for key in state if key not in expected]
    shapes = [f"{key}: file {tuple(state[key].shape)} vs model {tuple(expected[key].shape)}"
              for key in expected if key in state and state[key].shape != expected[key].shape]
    if missing or unexpected or shapes:
        def head(items: list[str]) -> str:
            return ", ".join(items[:5]) + (f" (+{len(items) - 5} more)" if len(items) > 5 else "")
        problems = []
        if missing:
            problems.append(f"missing keys: {head(missing)}")
        if unexpected:
            problems.append(f"unexpected keys: {head(unexpected)}")
        if shapes:
            problems.append(f"shape mismatches: {head(shapes)}")
        raise UserError(f"{what} do not fit the network: " + "; ".join(problems), file=str(path),
                        hint="check the model name and kwargs (depth, width, classes) the file was trained with")
    model.load_state_dict(state, strict=True)


def load_teacher(checkpoint_path: str | Path, model_name: str, model_kwargs: dict[str, Any] | None = None,
                 num_classes: int = 10, in_channels: int = 3,
                 map_location: torch.device | str = "cpu") -> nn.Module:
    """Build ``model_name`` from the registry, load the checkpoint (``{"model": state_dict,
    ...}`` as the trainer saves, or a raw state dict), move it to ``map_location`` and
    freeze it (eval mode, no gradients)."""
    from .models import create_model

    model = create_model(model_name, num_classes=num_classes, in_channels=in_channels, **(model_kwargs or {}))
    load_weights(model, checkpoint_path, what="teacher weights")
    return freeze(model.to(map_location))
