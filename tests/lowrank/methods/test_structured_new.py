"""afdf and block_acdc against independent references (numpy's DFT, scipy's DCT and block_diag),
and the eval-mode rule: the path that runs is the path that is counted."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.fft
import scipy.linalg
import torch
from torch.utils.flop_counter import FlopCounterMode

from lowrank.methods import ConvSpec, get_method
from lowrank.methods.afdf import StackedAFDFLinear
from lowrank.methods.block_acdc import BlockACDCLinear, effective_groups


def numpy_afdf(layer: StackedAFDFLinear) -> np.ndarray:
    """Re(prod_l diag(a_l) F diag(d_l) F^H)[:in, :out] with F the unitary DFT (row-vector convention)."""
    n = layer.n
    f = np.fft.fft(np.eye(n), norm="ortho")  # x @ f == fft(x) for row vectors (f is symmetric)
    a = layer.a.detach().double().numpy()
    d = layer.d.detach().double().numpy()
    w = np.eye(n, dtype=complex)
    for k in range(layer.layers):
        w = w @ np.diag(a[0, k] + 1j * a[1, k]) @ f @ np.diag(d[0, k] + 1j * d[1, k]) @ f.conj().T
    return w.real[:layer.in_features, :layer.out_features]


@pytest.mark.parametrize("shape", [(8, 8), (6, 10), (12, 5)])
@pytest.mark.parametrize("layers", [1, 3])
def test_afdf_is_the_complex_fourier_product(shape, layers):
    torch.manual_seed(1)
    layer = StackedAFDFLinear(*shape, layers).double()
    with torch.no_grad():  # far from the identity, so a wrong transform cannot pass
        layer.a.normal_(0, 1)
        layer.d.normal_(0, 1)
    expected = numpy_afdf(layer)
    np.testing.assert_allclose(layer.matrix().detach().numpy(), expected, rtol=1e-10, atol=1e-10)
    x = torch.randn(4, shape[0], dtype=torch.float64)
    np.testing.assert_allclose(layer.fast(x).detach().numpy(), x.numpy() @ expected, rtol=1e-10, atol=1e-10)


def numpy_block_acdc(layer: BlockACDCLinear) -> np.ndarray:
    n, g = layer.n, layer.groups
    c = scipy.fft.dct(np.eye(n // g), type=2, norm="ortho", axis=0)  # C with dct(v) = C v
    b = scipy.linalg.block_diag(*[c] * g)
    a, d = layer.a.detach().double().numpy(), layer.d.detach().double().numpy()
    w = np.eye(n)
    for k in range(layer.layers):
        w = w @ np.diag(a[k]) @ b.T @ np.diag(d[k]) @ b  # row vectors: dct(v) = v B^T, idct(v) = v B
        if layer.perm is not None and k < layer.layers - 1:
            p = np.zeros((n, n))
            p[layer.perm.numpy(), np.arange(n)] = 1.0  # z[:, perm] = z @ P
            w = w @ p
    return w[:layer.in_features, :layer.out_features]


@pytest.mark.parametrize("shuffle", ["riffle", "random", "none"])
@pytest.mark.parametrize("shape,groups", [((16, 16), 4), ((12, 8), 3), ((10, 10), 4)])
def test_block_acdc_is_blockwise_dct_with_shuffles(shuffle, shape, groups):
    torch.manual_seed(2)
    layer = BlockACDCLinear(*shape, 3, groups=groups, shuffle=shuffle).double()
    with torch.no_grad():
        layer.a.normal_(0, 1)
        layer.d.normal_(0, 1)
    expected = numpy_block_acdc(layer)
    np.testing.assert_allclose(layer.matrix().detach().numpy(), expected, rtol=1e-10, atol=1e-10)
    if shuffle == "none":  # no mixing across groups: the stack stays block-diagonal
        size = layer.n // layer.groups
        full = numpy_block_acdc(layer) if shape[0] == shape[1] else None
        if full is not None:
            mask = scipy.linalg.block_diag(*[np.ones((size, size))] * layer.groups).astype(bool)
            assert np.abs(full[~mask]).max() < 1e-12


def test_block_acdc_groups_reduce_to_divisors():
    assert effective_groups(16, 4) == 4 and effective_groups(10, 4) == 2 and effective_groups(7, 4) == 1


@pytest.mark.parametrize("name,options", [("afdf", {}), ("block_acdc", {"groups": 2})])
def test_eval_forward_runs_the_counted_path_and_caches_the_matrix(name, options, monkeypatch):
    method = get_method(name)
    spec = ConvSpec(8, 8, (1, 1))  # in*out = 64 is cheaper than any transform here: counted as a 1x1 conv
    module = method.build(spec, 4, **options).eval()
    core = next(m for m in module.modules() if hasattr(m, "matrix"))
    calls = {"n": 0}
    real = core.matrix

    def counting():
        calls["n"] += 1
        return real()

    monkeypatch.setattr(core, "matrix", counting)
    x = torch.randn(1, 8, 5, 5)
    with torch.no_grad():
        with FlopCounterMode(display=False) as counter:
            first = module(x)
        second = module(x)
    assert counter.get_total_flops() // 2 == method.macs(spec, 4, (5, 5), **options) == 25 * 64
    assert calls["n"] == 1  # built once, reused while the parameters are unchanged
    with torch.no_grad():
        core.a.add_(0.1)  # an optimiser step changes the parameters: rebuilt
        third = module(x)
    assert calls["n"] == 2
    torch.testing.assert_close(first, second)
    assert not torch.allclose(first, third)
    module.train()  # training: differentiable, never the stale cache
    out = module(x)
    out.sum().backward()
    assert core.a.grad is not None and core.a.grad.abs().sum() > 0


@pytest.mark.parametrize("name", ["afdf", "block_acdc"])
def test_eval_and_training_paths_agree(name):
    method = get_method(name)
    spec = ConvSpec(64, 48, (3, 3), padding=(1, 1), bias=True)
    module = method.build(spec, 3)
    x = torch.randn(2, 64, 6, 6)
    train_out = module(x)
    with torch.no_grad():
        eval_out = module.eval()(x)
    torch.testing.assert_close(train_out, eval_out, rtol=1e-4, atol=1e-5)


def test_counts_are_what_the_declarations_say():
    spec = ConvSpec(32, 64, (3, 3), padding=(1, 1))
    assert get_method("afdf").params(spec, 5) == 32 * 9 + 4 * 5 * 64
    assert get_method("block_acdc").params(spec, 5, groups=4) == 32 * 9 + 2 * 5 * 64
    # per position: min(L * layer cost, in*out); at N = 64, 5 layers of AFDF cost more than in*out
    from lowrank.methods.afdf import layer_cost as afdf_cost
    from lowrank.methods.block_acdc import layer_cost as block_cost
    assert afdf_cost(64) == 4 * 64 * 6 + 8 * 64
    assert block_cost(64, 4) == 2 * 4 * 16 * 4 + 2 * 64
    assert get_method("block_acdc").macs(spec, 5, (8, 8), groups=4) == 8 * 8 * 32 * 9 + 8 * 8 * min(5 * block_cost(64, 4), 32 * 64)
