"""HashedNets: the hash against a plain-Python reference, buffers vs parameters, memory, determinism."""

from __future__ import annotations

import pytest
import torch

from lowrank.methods import ConvSpec, get_method
from lowrank.methods.hashed import (HashedWeight, hash_codes, hash_python, layer_seed, mix32, mix32_python,
                                    real_weights)

SPEC = ConvSpec(32, 48, (3, 3), (1, 1), (1, 1), bias=True)


def decode(codes: torch.Tensor) -> tuple[list[int], list[int]]:
    values = codes.tolist()
    return [v if v >= 0 else ~v for v in values], [1 if v >= 0 else -1 for v in values]


def test_mix32_matches_python_including_large_values():
    values = [0, 1, 2, 12345, 2 ** 31 - 1, 2 ** 31, 2 ** 32 - 1, 0xDEADBEEF]
    assert mix32(torch.tensor(values)).tolist() == [mix32_python(v) for v in values]


@pytest.mark.parametrize("real,seed", [(1, 0), (37, 12345), (1000, 2 ** 32 - 5)])
def test_codes_match_the_python_reference(real, seed):
    index, sign = decode(hash_codes(3000, real, seed))
    expected = [hash_python(i, real, seed) for i in range(3000)]
    assert index == [e[0] for e in expected]
    assert sign == [e[1] for e in expected]


def test_virtual_weight_is_sign_times_shared_weight():
    hashed = HashedWeight((6, 5, 3, 3), 0.3, seed=99)
    virtual = hashed().flatten()
    w = hashed.weight.detach()
    for i in range(virtual.numel()):
        h, s = hash_python(i, hashed.real, 99)
        assert virtual[i].item() == s * w[h].item()


def test_hash_spreads_over_buckets_and_signs():
    codes = hash_codes(100_000, 10_000, 3)
    index, sign = decode(codes)
    assert len(set(index)) > 0.99 * 10_000  # ~10 draws per bucket: essentially all hit
    assert 0.48 < sign.count(-1) / len(sign) < 0.52


@pytest.mark.parametrize("name", ["hashed", "sep_hashed"])
@pytest.mark.parametrize("index", ["buffer", "recompute"])
def test_index_and_sign_are_buffers_not_parameters(name, index):
    module = get_method(name).build(SPEC, 0.1, index=index)
    params = dict(module.named_parameters())
    assert "hashed.weight" in params and "bias" in params
    assert all(p.dtype.is_floating_point for p in params.values())
    assert not any(name_.endswith("codes") for name_ in params)
    buffers = dict(module.named_buffers())
    if index == "buffer":
        assert list(buffers) == ["hashed.codes"]
        assert buffers["hashed.codes"].dtype == torch.int32
        assert "hashed.codes" not in module.state_dict()  # rebuilt from the seed, not checkpointed
    else:
        assert buffers == {}


def test_memory_no_int64_buffer_and_four_bytes_per_virtual_weight():
    spec = ConvSpec(64, 128, (3, 3), (1, 1), (1, 1))
    virtual = 128 * 64 * 9
    for name, count in [("hashed", virtual), ("sep_hashed", 128 * 64)]:
        module = get_method(name).build(spec, 0.05)
        buffer_bytes = sum(b.numel() * b.element_size() for b in module.buffers())
        assert buffer_bytes == 4 * count
        assert not any(b.dtype == torch.int64 and b.numel() >= count for b in module.buffers())
        lean = get_method(name).build(spec, 0.05, index="recompute")
        assert sum(b.numel() * b.element_size() for b in lean.buffers()) == 0


def test_recompute_and_buffer_give_the_same_layer():
    torch.manual_seed(0)
    one = get_method("hashed").build(SPEC, 0.1, index="buffer")
    two = get_method("hashed").build(SPEC, 0.1, index="recompute")
    two.load_state_dict(one.state_dict())
    x = torch.randn(2, 32, 6, 6)
    torch.testing.assert_close(one(x), two(x))


def test_hash_is_deterministic_across_constructions_and_depends_on_shape_and_seed():
    a = get_method("hashed").build(SPEC, 0.1)
    b = get_method("hashed").build(SPEC, 0.1)
    assert torch.equal(a.hashed.codes, b.hashed.codes)
    c = get_method("hashed").build(SPEC, 0.1, seed=1)
    assert not torch.equal(a.hashed.codes, c.hashed.codes)
    other_shape = ConvSpec(48, 32, (3, 3), (1, 1), (1, 1), bias=True)
    assert layer_seed(SPEC, 0, "hashed") != layer_seed(other_shape, 0, "hashed")
    assert layer_seed(SPEC, 0, "hashed") == layer_seed(SPEC, 0, "hashed")


def test_real_weight_count():
    assert real_weights(1000, 0.1) == 100
    assert real_weights(1000, 1e-9) == 1
    assert real_weights(1000, 1.0) == 1000
    assert real_weights(10, 0.25) == 3  # 2.5 rounds half up
    assert get_method("hashed").params(SPEC, 0.1) == round(0.1 * 48 * 32 * 9) + 48
    assert get_method("sep_hashed").params(SPEC, 0.1) == 32 * 9 + round(0.1 * 32 * 48) + 48


def test_hashed_full_keeps_dense_mult_adds():
    assert get_method("hashed").macs(SPEC, 0.01, (8, 8)) == get_method("dense").macs(SPEC, None, (8, 8))


@pytest.mark.parametrize("name", ["hashed", "sep_hashed"])
def test_an_eval_forward_gathers_the_virtual_weight_once_and_rebuilds_it_when_a_weight_changes(name, monkeypatch):
    """The counted eval path is the dense conv: the M-entry gather runs once per parameter state, not
    per forward (it cost 9x the 1x1 conv at 640 channels); training still gathers every forward."""
    layer = get_method(name).build(ConvSpec(8, 12, (3, 3), padding=(1, 1)), 0.25)
    calls = []
    original = HashedWeight.gather
    monkeypatch.setattr(HashedWeight, "gather", lambda self: calls.append(1) or original(self))
    x = torch.randn(2, 8, 5, 5)
    layer.eval()
    with torch.no_grad():
        first = layer(x)
        second = layer(x)
    assert len(calls) == 1 and torch.equal(first, second)
    with torch.no_grad():
        layer.hashed.weight.add_(1.0)  # an optimiser step: the version counter moves
        changed = layer(x)
    assert len(calls) == 2 and not torch.equal(changed, first)
    # eval with autograd: cached forward, exact gradient from a rebuild in backward
    layer.zero_grad()
    layer(x).square().sum().backward()
    eval_grad = layer.hashed.weight.grad.clone()
    layer.train()
    layer.zero_grad()
    layer(x).square().sum().backward()
    assert torch.allclose(layer.hashed.weight.grad, eval_grad, atol=1e-5)
    calls.clear()
    layer(x)
    layer(x)
    assert len(calls) == 2  # training mode: every forward
