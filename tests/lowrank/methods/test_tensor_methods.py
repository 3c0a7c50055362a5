"""Tensor-Train, Tucker and CP substitutes: every network shape, exact counts, reconstruction, init."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from lowrank.methods import ConvSpec, get_method
from lowrank.methods._tensor import balanced_factors, mode_shapes, to_matrix
from lowrank.methods.cp import cp_rank, cp_reconstruction_macs
from lowrank.methods.tt import tt_ranks, tt_reconstruction_macs
from lowrank.methods.tucker import tucker_ranks, tucker_reconstruction_macs
from lowrank.models import create_model

TENSOR_METHODS = ("tt", "tucker", "cp")
CHANNELS = (1, 2, 3, 10, 16, 32, 36, 48, 64, 72, 128, 144, 160, 256, 288, 320, 512, 576, 640, 1024, 2048)
NETWORKS = {  # every network the research notes use, with its input size
    "wrn_28_10": (dict(name="wrn", depth=28, widen_factor=10), 32),
    "wrn_40_2": (dict(name="wrn", depth=40, widen_factor=2), 32),
    "resnet18": (dict(name="resnet18"), 32),
    "resnet9": (dict(name="resnet9"), 32),
    "darts": (dict(name="darts"), 32),
    "wrn50_2": (dict(name="wrn50_2"), 224),
}


def network_specs() -> list[ConvSpec]:
    """Every distinct groups=1 conv shape of the networks above (built on meta) plus channel pairs."""
    specs: set[ConvSpec] = set()
    for kwargs, _ in NETWORKS.values():
        kwargs = dict(kwargs)
        with torch.device("meta"):
            model = create_model(kwargs.pop("name"), **kwargs)
        specs.update(ConvSpec.from_conv(m) for m in model.modules() if isinstance(m, nn.Conv2d) and m.groups == 1)
    for c_in, c_out in itertools.product((3, 10, 16, 36, 48, 144, 288, 2048), (2, 16, 36, 144, 576, 640)):
        specs.add(ConvSpec(c_in, c_out, (3, 3), padding=(1, 1)))
        specs.add(ConvSpec(c_in, c_out, (1, 1), stride=(2, 2), bias=True))
    return sorted(specs, key=lambda s: (s.in_channels, s.out_channels, s.kernel_size, s.stride, s.bias))


SPECS = network_specs()


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("d", [2, 3, 4])
def test_balanced_factors_multiply_back_and_balance(d):
    for n in range(1, 2100):
        factors = balanced_factors(n, d)
        assert len(factors) == d and math.prod(factors) == n and list(factors) == sorted(factors, reverse=True)
    assert balanced_factors(640, 3) == (10, 8, 8)
    assert balanced_factors(2048, 3) == (16, 16, 8)
    assert balanced_factors(3, 3) == (3, 1, 1)
    assert balanced_factors(36, 3) == (4, 3, 3)


def test_to_matrix_inverts_the_mode_pairing():
    """Independent reference: T[(o1 i1), (o2 i2), (o3 i3)] = W[o, i] with o, i in row-major digits."""
    out, inp = 12, 10
    outs, ins = mode_shapes(out, inp, 3)
    w = np.random.default_rng(0).standard_normal((out, inp))
    t = np.zeros([o * i for o, i in zip(outs, ins)])
    for o in range(out):
        for i in range(inp):
            od, id_ = np.unravel_index(o, outs), np.unravel_index(i, ins)
            t[tuple(a * ii + b for a, b, ii in zip(od, id_, ins))] = w[o, i]
    assert torch.equal(to_matrix(torch.from_numpy(t), outs, ins), torch.from_numpy(w))


@pytest.mark.parametrize("name", TENSOR_METHODS)
def test_every_network_shape_builds_with_exact_counts_and_bounded_ranks(name):
    """All conv shapes of WRN-28-10/40-2, ResNet-18/9, DARTS, WRN-50-2: params() == built module, ranks in [1, cap]."""
    method = get_method(name)
    for spec in SPECS:
        for hp in (0.0, 0.01, 0.3, 1.0):
            with torch.device("meta"):
                module = method.build(spec, hp)
            assert n_params(module) == method.params(spec, hp), (spec, hp)
            sizes = module.sizes
            if name == "tt":
                ranks = tt_ranks(spec, hp)
                caps = [1] + [min(math.prod(sizes[:k]), math.prod(sizes[k:])) for k in range(1, len(sizes))] + [1]
            elif name == "tucker":
                ranks = tucker_ranks(spec, hp)
                caps = [min(n, math.prod(sizes) // n) for n in sizes]
            else:
                ranks, caps = (cp_rank(spec, hp),), (math.prod(sizes) // max(sizes),)
            assert all(1 <= r <= c for r, c in zip(ranks, caps)), (spec, hp, ranks, caps)
            if hp == 1.0:  # full rank at the top of the range
                assert tuple(ranks) == tuple(caps)


@pytest.mark.parametrize("name", TENSOR_METHODS)
@pytest.mark.slow
def test_every_network_shape_runs_forward_like_conv2d(name):
    """Real forward at rank 1 (the setting that crashed CP in the notes) and at a moderate scale."""
    method = get_method(name)
    for spec in SPECS:
        conv = nn.Conv2d(spec.in_channels, spec.out_channels, spec.kernel_size, spec.stride, spec.padding,
                         spec.dilation, bias=spec.bias)
        x = torch.randn(2, spec.in_channels, 5, 5)
        expected = conv(x).shape
        hps = (0.0, 0.2) if spec.in_channels * spec.out_channels <= 64 * 64 else (0.0,)
        for hp in hps:
            y = method.build(spec, hp)(x)
            assert y.shape == expected and torch.isfinite(y).all(), (spec, hp)
        with torch.device("meta"):  # full rank: shapes only
            assert method.build(spec, 1.0)(x.to("meta")).shape == expected


@pytest.mark.parametrize("name", TENSOR_METHODS)
def test_count_is_monotone_in_rank_scale(name):
    method = get_method(name)
    grid = np.linspace(method.hp.low, method.hp.high, 401)
    for spec in SPECS:
        counts = [method.params(spec, float(h)) for h in grid]
        assert all(a <= b for a, b in zip(counts, counts[1:])), spec


def test_reconstruction_matches_independent_einsum():
    spec = ConvSpec(12, 20, (1, 1))
    torch.manual_seed(0)
    tt = get_method("tt").build(spec, 0.6)
    a, b, c = tt.cores
    assert torch.allclose(tt.reconstruct(), torch.einsum("xib,bjc,ckx->ijk", a, b, c), atol=1e-6)
    tucker = get_method("tucker").build(spec, 0.6)
    u = list(tucker.factors)
    assert torch.allclose(tucker.reconstruct(), torch.einsum("abc,ia,jb,kc->ijk", tucker.core, *u), atol=1e-6)
    cp = get_method("cp").build(spec, 0.6)
    assert torch.allclose(cp.reconstruct(), torch.einsum("ir,jr,kr->ijk", *cp.factors), atol=1e-6)


def test_forward_is_depthwise_then_reconstructed_pointwise():
    spec = ConvSpec(12, 20, (3, 3), stride=(2, 2), padding=(2, 2), dilation=(2, 2), bias=True)
    for name in TENSOR_METHODS:
        module = get_method(name).build(spec, 0.5)
        nn.init.normal_(module.bias)
        x = torch.randn(2, 12, 11, 11)
        reference = F.conv2d(module.depthwise(x), module.weight(), module.bias)
        assert torch.allclose(module(x), reference, atol=1e-6)


def tt_svd(tensor: np.ndarray) -> list[np.ndarray]:
    """Oseledets' TT-SVD with no truncation: exact cores of the full TT ranks."""
    sizes, cores, rank = tensor.shape, [], 1
    rest = tensor.reshape(sizes[0], -1)
    for n in sizes[:-1]:
        u, s, vt = np.linalg.svd(rest.reshape(rank * n, -1), full_matrices=False)
        cores.append(u.reshape(rank, n, -1))
        rank = u.shape[1]
        rest = s[:, None] * vt
    cores.append(rest.reshape(rank, sizes[-1], 1))
    return cores


def test_full_rank_tt_represents_any_weight():
    """At rank_scale 1 the ranks equal TT-SVD's exact ranks, so any weight loads and reconstructs."""
    spec = ConvSpec(24, 18, (1, 1))
    module = get_method("tt").build(spec, 1.0)
    w = np.random.default_rng(1).standard_normal((18, 24))
    d = module.dims  # lay w out as the module's tensor: (o1..od, i1..id) -> (o1 i1, ..., od id)
    paired = torch.from_numpy(w).reshape(*module.outs, *module.ins)
    order = [x for k in range(d) for x in (k, d + k)]
    t = paired.permute(order).reshape(module.sizes).numpy()
    cores = tt_svd(t)
    assert [c.shape for c in cores] == [tuple(p.shape) for p in module.cores]
    with torch.no_grad():
        for p, c in zip(module.cores, cores):
            p.copy_(torch.from_numpy(c))
    assert torch.allclose(module.weight().reshape(18, 24).double(), torch.from_numpy(w), atol=1e-4)


@pytest.mark.parametrize("name", TENSOR_METHODS)
def test_init_variance_matches_kaiming_of_dense_pointwise(name):
    spec = ConvSpec(256, 256, (3, 3), padding=(1, 1))
    ratios = []
    for seed in range(4):
        torch.manual_seed(seed)
        ratios.append(get_method(name).build(spec, 0.3).weight().var().item() / (2.0 / 256))
    assert 0.7 < np.mean(ratios) < 1.4, ratios


@pytest.mark.parametrize("name,dims", [("tt", 3), ("tucker", 3), ("cp", 2), ("tt", 4), ("tucker", 2)])
def test_macs_match_flop_counter(name, dims):
    """Flop counter on one image = declared per-image macs + one reconstruction (CP: dims=2, no Khatri-Rao)."""
    spec = ConvSpec(48, 64, (3, 3), stride=(2, 2), padding=(1, 1))
    method = get_method(name)
    module = method.build(spec, 0.4, dims=dims)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        module(torch.zeros(1, 48, 16, 16))
    recon = {"tt": tt_reconstruction_macs, "tucker": tucker_reconstruction_macs, "cp": cp_reconstruction_macs}[name]
    assert counter.get_total_flops() == 2 * (method.macs(spec, 0.4, (16, 16), dims=dims) + recon(spec, 0.4, dims=dims))
    assert module.macs((16, 16)) == method.macs(spec, 0.4, (16, 16), dims=dims)


def test_dims_option_and_bad_values():
    spec = ConvSpec(64, 64, (3, 3), padding=(1, 1))
    for name in TENSOR_METHODS:
        method = get_method(name)
        for dims in (2, 3, 4, 5):
            module = method.build(spec, 0.5, dims=dims)
            assert len(module.sizes) == dims and n_params(module) == method.params(spec, 0.5, dims=dims)
        with pytest.raises(ValueError, match="dims"):
            method.build(spec, 0.5, dims=1)
        with pytest.raises(ValueError, match="rank_scale"):
            method.params(spec, 1.5)
