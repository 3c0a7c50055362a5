"""Layer-wise imitation (Go Wide, Then Narrow): blocks, adapters, stage losses, merges."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from scipy.special import softmax
from scipy.stats import entropy

from lowrank.errors import UserError
from lowrank.imitation import (Adapters, Imitator, block_imitation_loss, block_pairs, build_adapters,
                               fold_bn_into_conv, imitation_loss, merge_adapter_before_conv,
                               merge_adapter_into_conv, output_imitation_loss)
from lowrank.models import create_model


def wrn(widen: int, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return create_model("wrn", depth=10, widen_factor=widen)


def test_block_pairs_and_adapters_follow_the_tap_widths() -> None:
    student, teacher = wrn(1, 0), wrn(2, 1)
    pairs = block_pairs(student, teacher)
    assert [(p.student_name, p.teacher_name) for p in pairs] == [("group1",) * 2, ("group2",) * 2, ("group3",) * 2]
    assert pairs[1].student is student.group2 and pairs[1].teacher is teacher.group2
    adapters = build_adapters(student, teacher, pairs, torch.randn(1, 3, 32, 32))
    assert [(a.in_channels, a.out_channels) for a in adapters.to_teacher] == [(16, 32), (32, 64), (64, 128)]
    same = build_adapters(student, wrn(1, 2), block_pairs(student, wrn(1, 2)), torch.randn(1, 3, 32, 32))
    assert all(isinstance(a, nn.Identity) for a in same.to_teacher)
    with pytest.raises(UserError, match="same resolution"):
        build_adapters(student, teacher, block_pairs(student, teacher, ["group1"], ["group2"]),
                       torch.randn(1, 3, 32, 32))


def test_cast_back_inverts_the_adapter() -> None:
    torch.manual_seed(0)
    adapters = Adapters([4], [10])
    s = torch.randn(2, 4, 3, 3)
    torch.testing.assert_close(adapters.cast_back(0, adapters.to_teacher[0](s)), s, rtol=1e-4, atol=1e-4)


def test_block_imitation_loss_by_hand() -> None:
    adapters = Adapters([2, 3], [4, 3])
    with torch.no_grad():
        adapters.to_teacher[0].weight.copy_(torch.tensor([[1.0, 0], [0, 1], [1, 1], [0, 0]])[:, :, None, None])
    s0, t0 = torch.ones(1, 2, 1, 1), torch.zeros(1, 4, 1, 1)  # U s0 = [1, 1, 2, 0]
    s1 = torch.randn(1, 3, 2, 2)
    total, parts = block_imitation_loss([s0, s1], [t0, s1], adapters)
    assert parts["mse_0"].item() == pytest.approx((1 + 1 + 4 + 0) / 4)
    assert parts["mse_1"].item() == 0.0
    assert total.item() == pytest.approx(1.5)


def test_stage_2_and_3_losses() -> None:
    s, t, y = torch.tensor([[1.0, 2.0, 0.0]]), torch.tensor([[0.0, 2.0, 1.0]]), torch.tensor([1])
    expected = 9.0 * entropy(softmax(t[0].numpy() / 3.0), softmax(s[0].numpy() / 3.0))
    assert output_imitation_loss(s, t, temperature=3.0).item() == pytest.approx(expected, rel=1e-5)
    assert output_imitation_loss(s, s).item() == pytest.approx(0.0, abs=1e-7)
    loss3, parts3 = imitation_loss(3, student_logits=s, targets=y)
    assert loss3.item() == pytest.approx(F.cross_entropy(s, y).item()) == pytest.approx(parts3["ce"].item())
    loss2, parts2 = imitation_loss(2, student_logits=s, targets=y, teacher_logits=t, temperature=3.0)
    assert loss2.item() == pytest.approx(expected, rel=1e-5) and set(parts2) == {"ce", "kl"}
    with pytest.raises(ValueError, match="stage"):
        imitation_loss(4, student_logits=s, targets=y)


def test_a_copy_of_the_teacher_imitates_it_exactly() -> None:
    teacher = wrn(1, 0).eval()
    student = copy.deepcopy(teacher).eval()
    imitator = Imitator(student, teacher, torch.randn(1, 3, 32, 32))
    loss, parts, logits = imitator.step(1, torch.randn(2, 3, 32, 32), torch.tensor([0, 1]))
    assert loss.item() == pytest.approx(0.0, abs=1e-10) and logits.shape == (2, 10)
    assert set(parts) == {"ce", "mse", "mse_0", "mse_1", "mse_2"}


def test_teacher_forcing_decouples_the_blocks() -> None:
    teacher, student = wrn(2, 0), wrn(1, 1)
    imitator = Imitator(student, teacher, torch.randn(1, 3, 32, 32))
    x, y = torch.randn(2, 3, 32, 32), torch.tensor([0, 1])
    _, parts, _ = imitator.step(1, x, y)
    # recompute block 2's term by hand: student group2 fed pinv(U_1) applied to teacher group1's output
    with torch.no_grad():
        t1 = teacher.group1(teacher.stem(x))
        s2 = student.group2(imitator.adapters.cast_back(0, t1))
        expected = F.mse_loss(imitator.adapters.to_teacher[1](s2), teacher.group2(t1))
    assert parts["mse_1"].item() == pytest.approx(expected.item(), rel=1e-5)
    # block 3's loss reaches neither block 1 nor block 2 of the student
    student.zero_grad()
    terms = _stage1_terms(imitator, x, y)
    terms[2].backward()
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in student.group1.parameters())
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in student.group2.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in student.group3.parameters())
    # without teacher forcing the same term trains the earlier blocks too
    free = Imitator(student, teacher, torch.randn(1, 3, 32, 32), teacher_forcing=False)
    imitator.close()
    student.zero_grad()
    _stage1_terms(free, x, y)[2].backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in student.group1.parameters())


def _stage1_terms(imitator: Imitator, x: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]:
    """The per-block stage-1 terms with their graphs (the step's parts are detached)."""
    with torch.no_grad():
        imitator.teacher(x)
    imitator._forcing = imitator.teacher_forcing
    try:
        imitator.student(x)
    finally:
        imitator._forcing = False
    s, t = imitator.student_recorder.features, imitator.teacher_recorder.features
    return [F.mse_loss(a(si), ti) for a, si, ti in zip(imitator.adapters.to_teacher, s, t)]


def test_teacher_forcing_refuses_non_consecutive_blocks_such_as_darts_cells() -> None:
    torch.manual_seed(0)
    teacher = create_model("darts", C=4, layers=3, auxiliary=False)
    student = create_model("darts", C=2, layers=3, auxiliary=False)
    x, y = torch.randn(2, 3, 16, 16), torch.tensor([0, 1])
    forced = Imitator(student, teacher, x)
    with pytest.raises(UserError, match="teacher_forcing"):
        forced.step(1, x, y)
    forced.close()
    free = Imitator(student, teacher, x, teacher_forcing=False)
    for stage in (1, 2, 3):
        loss, parts, logits = free.step(stage, x, y)
        loss.backward()
        assert torch.isfinite(loss) and logits.shape == (2, 10)


# --- merges ---------------------------------------------------------------------------

def test_merge_adapter_into_conv_is_exact() -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 8, 3, stride=2, padding=1, bias=True)
    adapter = nn.Conv2d(8, 5, 1, bias=True)
    x = torch.randn(2, 3, 9, 9)
    merged = merge_adapter_into_conv(conv, adapter)
    assert merged.out_channels == 5 and merged.stride == (2, 2)
    torch.testing.assert_close(merged(x), adapter(conv(x)), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="grouped"):
        merge_adapter_into_conv(nn.Conv2d(8, 8, 3, groups=8), adapter)


def test_merge_adapter_before_conv_is_exact_where_possible() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 4, 7, 7)
    adapter, conv = nn.Conv2d(4, 6, 1, bias=False), nn.Conv2d(6, 5, 3, padding=1, bias=True)
    torch.testing.assert_close(merge_adapter_before_conv(adapter, conv)(x), conv(adapter(x)), rtol=1e-5, atol=1e-5)
    biased, unpadded = nn.Conv2d(4, 6, 1, bias=True), nn.Conv2d(6, 5, 3, padding=0, bias=False)
    torch.testing.assert_close(merge_adapter_before_conv(biased, unpadded)(x), unpadded(biased(x)),
                               rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="padded"):
        merge_adapter_before_conv(biased, conv)


def test_a_merged_network_computes_the_same_function() -> None:
    # conv -> BN -> adapter -> ReLU -> conv: fold the (eval) BN, merge the adapter.
    torch.manual_seed(0)
    conv, bn, adapter, head = (nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.Conv2d(8, 4, 1, bias=False),
                               nn.Conv2d(4, 2, 3))
    bn.running_mean.uniform_(-1, 1)
    bn.running_var.uniform_(0.5, 2)
    bn.weight.data.uniform_(0.5, 1.5)
    bn.bias.data.uniform_(-0.5, 0.5)
    original = nn.Sequential(conv, bn, adapter, nn.ReLU(), head).eval()
    merged = nn.Sequential(merge_adapter_into_conv(fold_bn_into_conv(conv, bn), adapter), nn.ReLU(), head).eval()
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(merged(x), original(x), rtol=1e-5, atol=1e-5)
    assert sum(p.numel() for p in merged.parameters()) < sum(p.numel() for p in original.parameters())
