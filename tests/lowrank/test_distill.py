"""Distillation: KD and AT against hand/scipy references, tap recording, teacher loading."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from scipy.special import softmax
from scipy.stats import entropy

from lowrank.distill import (Distiller, TapRecorder, at_betas, at_loss, at_tap_loss, attention_map,
                             evaluate_teacher, kd_loss, load_teacher, load_weights)
from lowrank.errors import UserError
from lowrank.models import create_model


def small_wrn(widen: int = 1, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return create_model("wrn", depth=10, widen_factor=widen)


# --- KD -------------------------------------------------------------------------------

def test_kd_of_equal_logits_is_zero_and_total_is_the_ce_share() -> None:
    logits = torch.randn(4, 10)
    targets = torch.tensor([0, 3, 5, 9])
    total, parts = kd_loss(logits, logits.clone(), temperature=4.0, alpha=0.9, targets=targets)
    assert parts["kd"].item() == pytest.approx(0.0, abs=1e-6)
    assert total.item() == pytest.approx(0.1 * F.cross_entropy(logits, targets).item(), rel=1e-6)


def test_kd_matches_scipy_kl_times_t_squared_batch_mean() -> None:
    s = [[1.0, 2.0, 3.0], [0.5, -1.0, 2.0]]
    t = [[3.0, 2.0, 1.0], [0.0, 0.0, 1.0]]
    T, alpha = 2.0, 0.7
    targets = [2, 0]
    kl = [entropy(softmax([v / T for v in ti]), softmax([v / T for v in si])) for si, ti in zip(s, t)]
    expected_kd = T * T * sum(kl) / 2
    ce = -sum(math.log(softmax(si)[y]) for si, y in zip(s, targets)) / 2
    total, parts = kd_loss(torch.tensor(s), torch.tensor(t), T, alpha, torch.tensor(targets))
    assert parts["kd"].item() == pytest.approx(expected_kd, rel=1e-5)
    assert parts["ce"].item() == pytest.approx(ce, rel=1e-5)
    assert total.item() == pytest.approx(alpha * expected_kd + (1 - alpha) * ce, rel=1e-5)


# --- AT -------------------------------------------------------------------------------

def test_attention_map_by_hand() -> None:
    features = torch.tensor([[[[1.0, 2.0]], [[3.0, 4.0]]]])  # (1, 2, 1, 2)
    # channel mean of squares: [(1 + 9) / 2, (4 + 16) / 2] = [5, 10]; L2-normalised
    torch.testing.assert_close(attention_map(features), torch.tensor([[5.0, 10.0]]) / math.sqrt(125.0))


def test_at_of_identical_or_rescaled_features_is_zero() -> None:
    f = torch.randn(2, 8, 4, 4)
    assert at_tap_loss(f, f).item() == 0.0
    assert at_tap_loss(f, 3.0 * f.repeat(1, 2, 1, 1)).item() == pytest.approx(0.0, abs=1e-12)


def test_at_loss_numeric_example_and_betas() -> None:
    s = torch.tensor([[[[1.0, 0.0]]]])  # maps: student [1, 0], teacher [1, 1]/sqrt(2)
    t = torch.tensor([[[[1.0, 1.0]]]])
    r = 1 / math.sqrt(2)
    per_tap = ((1 - r) ** 2 + r ** 2) / 2  # mean over the two positions
    total, terms = at_loss([s, s], [t, s], betas=[10.0, 5.0])
    assert terms[0].item() == pytest.approx(per_tap, rel=1e-6) and terms[1].item() == 0.0
    assert total.item() == pytest.approx(10.0 * per_tap, rel=1e-6)


def _reference_at(x: torch.Tensor) -> torch.Tensor:
    """attention-transfer utils.at, written from the reference code: normalize(x^2 mean over channels)."""
    return F.normalize(x.pow(2).mean(1).view(x.size(0), -1))


def _reference_total(student: list, teacher: list, beta: float) -> torch.Tensor:
    """deficient-efficient main.py: sum over taps of beta*3/n_taps * mse(at_s, at_t); for three taps
    this is attention-transfer cifar.py's ``opt.beta * sum(loss_groups)``."""
    n = len(student)
    return sum(beta * 3 / n * (_reference_at(s) - _reference_at(t)).pow(2).mean() for s, t in zip(student, teacher))


@pytest.mark.parametrize("n_taps", [3, 4])
def test_at_weight_matches_the_reference_code(n_taps: int) -> None:
    torch.manual_seed(n_taps)
    student = [torch.randn(4, 8 * (k + 1), 16 >> k, 16 >> k) for k in range(n_taps)]
    teacher = [torch.randn(4, 16 * (k + 1), 16 >> k, 16 >> k) for k in range(n_taps)]
    total, _ = at_loss(student, teacher, at_betas(1e3, n_taps))
    expected = _reference_total(student, teacher, 1e3)
    assert total.item() == pytest.approx(expected.item(), rel=1e-5)
    if n_taps == 3:  # attention-transfer cifar.py: beta * sum(at_losses), no halving
        plain = 1e3 * sum((_reference_at(s) - _reference_at(t)).pow(2).mean() for s, t in zip(student, teacher))
        assert total.item() == pytest.approx(plain.item(), rel=1e-5)


def test_at_pools_the_larger_map_to_the_smaller() -> None:
    torch.manual_seed(0)
    big, small = torch.randn(2, 4, 8, 8), torch.randn(2, 6, 4, 4)
    energy = F.avg_pool2d(big.pow(2).mean(1, keepdim=True), 2)
    expected = (F.normalize(energy.flatten(1)) - attention_map(small)).pow(2).mean()
    assert at_tap_loss(big, small).item() == pytest.approx(expected.item(), rel=1e-6)
    assert at_tap_loss(small, big).item() == pytest.approx(expected.item(), rel=1e-6)


# --- taps -----------------------------------------------------------------------------

def test_tap_recorder_collects_in_order_and_survives_substitution() -> None:
    model = small_wrn()
    # what lowrank.substitute does: replace a conv inside a tap, keeping the tap module
    model.group2[0].conv1 = nn.Sequential(nn.Conv2d(16, 4, 1, bias=False), nn.Conv2d(4, 32, 3, 2, 1, bias=False))
    with TapRecorder(model, model.tap_names) as recorder:
        model(torch.randn(2, 3, 32, 32))
        assert [tuple(f.shape[1:]) for f in recorder.features] == [(16, 32, 32), (32, 16, 16), (64, 8, 8)]
    assert not model.group1._forward_hooks  # removed on exit
    with pytest.raises(UserError, match="no submodule 'group9'"):
        TapRecorder(model, ["group9"])


# --- the distiller --------------------------------------------------------------------

def test_distiller_with_a_copy_of_the_teacher_has_no_kd_or_at() -> None:
    teacher = small_wrn(seed=1).eval()
    student = copy.deepcopy(teacher).eval()  # eval: same BN statistics as the teacher
    distiller = Distiller(student, teacher, temperature=4.0, alpha=0.9, at_beta=1e3)
    x, y = torch.randn(3, 3, 32, 32), torch.tensor([1, 2, 3])
    loss, parts = distiller.loss(student(x), x, y)
    assert parts["kd"].item() == pytest.approx(0.0, abs=1e-6)
    assert parts["at"].item() == pytest.approx(0.0, abs=1e-9)
    assert loss.item() == pytest.approx(0.1 * parts["ce"].item(), rel=1e-5)
    assert set(parts) == {"ce", "kd", "at", "at_0", "at_1", "at_2"}


def test_distiller_trains_the_student_only() -> None:
    teacher, student = small_wrn(widen=2, seed=1), small_wrn(seed=2)
    distiller = Distiller(student, teacher, alpha=0.5, at_beta=1e3)
    x, y = torch.randn(2, 3, 32, 32), torch.tensor([0, 1])
    loss, parts = distiller.loss(student(x), x, y)
    loss.backward()
    assert parts["at"].item() > 0 and parts["kd"].item() > 0
    assert all(p.grad is not None for p in student.parameters())
    assert all(p.grad is None and not p.requires_grad for p in teacher.parameters())
    expected = 0.5 * parts["kd"] + 0.5 * parts["ce"] + 1000.0 * (parts["at_0"] + parts["at_1"] + parts["at_2"])
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    distiller.close()
    assert not student.group1._forward_hooks and not teacher.group1._forward_hooks


def test_distiller_skips_the_teacher_when_nothing_needs_it() -> None:
    teacher, student = small_wrn(seed=1), small_wrn(seed=2)
    calls = []
    teacher.register_forward_hook(lambda *a: calls.append(1))
    distiller = Distiller(student, teacher, alpha=0.0, at_beta=0.0)
    x, y = torch.randn(2, 3, 32, 32), torch.tensor([0, 1])
    logits = student(x)
    loss, parts = distiller.loss(logits, x, y)
    assert not calls and loss.item() == pytest.approx(F.cross_entropy(logits, y).item())


def test_evaluate_teacher_counts_top1_and_top5_errors() -> None:
    class Fixed(nn.Module):  # logits = the input itself
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x

    logits = torch.tensor([[6.0, 5, 4, 3, 2, 1],   # target 0: top-1 right
                           [6.0, 5, 4, 3, 2, 1],   # target 4: top-1 wrong, top-5 right
                           [6.0, 5, 4, 3, 2, 1],   # target 5: both wrong
                           [1.0, 6, 2, 3, 4, 5]])  # target 1: right
    targets = torch.tensor([0, 4, 5, 1])
    loader = [(logits[:2], targets[:2]), (logits[2:], targets[2:])]
    assert evaluate_teacher(Fixed(), loader, "cpu") == (50.0, 25.0)


# --- loading --------------------------------------------------------------------------

def test_load_teacher_round_trip(tmp_path: Path) -> None:
    source = small_wrn(widen=2, seed=3).eval()
    x = torch.randn(2, 3, 32, 32)
    formats = {
        "checkpoint.pt": {"model": source.state_dict(), "epoch": 7, "optimizer": {"lr": 0.1}},
        "raw.pt": source.state_dict(),
        "dataparallel.pt": {f"module.{k}": v for k, v in source.state_dict().items()},
    }
    for name, obj in formats.items():
        torch.save(obj, tmp_path / name)
        teacher = load_teacher(tmp_path / name, "wrn", {"depth": 10, "widen_factor": 2}, num_classes=10)
        assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
        with torch.no_grad():
            torch.testing.assert_close(teacher(x), source(x))


def test_load_teacher_errors_are_user_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="not found"):
        load_teacher(tmp_path / "missing.pt", "wrn", {"depth": 10, "widen_factor": 2})
    torch.save({"model": small_wrn(widen=2).state_dict()}, tmp_path / "w2.pt")
    with pytest.raises(UserError, match="shape mismatches") as info:
        load_teacher(tmp_path / "w2.pt", "wrn", {"depth": 10, "widen_factor": 1})
    assert info.value.file == str(tmp_path / "w2.pt")
    with pytest.raises(UserError, match="missing keys"):
        load_teacher(tmp_path / "w2.pt", "wrn", {"depth": 16, "widen_factor": 2})
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="cannot read"):
        load_weights(small_wrn(), tmp_path / "junk.pt")
