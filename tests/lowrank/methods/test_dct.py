"""The torch.fft DCT-II / DCT-III (orthonormal) against scipy.fft, for powers of two and not."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.fft
import torch

from lowrank.methods.dct import dct, dct_macs, dct_matrix, from_makhoul, idct, makhoul_order, to_makhoul

SIZES = [1, 2, 3, 4, 5, 7, 8, 12, 31, 64, 100, 255, 256, 4096]


@pytest.mark.parametrize("n", SIZES)
def test_dct_matches_scipy_ortho_type2(n):
    x = np.random.default_rng(n).standard_normal((3, 2, n))
    expected = scipy.fft.dct(x, type=2, norm="ortho", axis=-1)
    np.testing.assert_allclose(dct(torch.from_numpy(x)).numpy(), expected, atol=1e-10)
    np.testing.assert_allclose(dct(torch.from_numpy(x).float()).numpy(), expected, atol=2e-4)


@pytest.mark.parametrize("n", SIZES)
def test_idct_matches_scipy_ortho_inverse(n):
    x = np.random.default_rng(n + 1).standard_normal((4, n))
    expected = scipy.fft.idct(x, type=2, norm="ortho", axis=-1)  # = DCT-III ortho
    np.testing.assert_allclose(idct(torch.from_numpy(x)).numpy(), expected, atol=1e-10)
    np.testing.assert_allclose(expected, scipy.fft.dct(x, type=3, norm="ortho", axis=-1), atol=1e-12)


@pytest.mark.parametrize("n", [5, 16, 33])
def test_round_trip_and_matrix(n):
    x = torch.randn(6, n, dtype=torch.float64)
    torch.testing.assert_close(idct(dct(x)), x)
    c = dct_matrix(n)
    torch.testing.assert_close(dct(x), x @ c.T)
    torch.testing.assert_close(c @ c.T, torch.eye(n, dtype=torch.float64))  # orthonormal


@pytest.mark.parametrize("n", [4, 7])
def test_gradients_are_correct(n):
    x = torch.randn(2, n, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(dct, (x,))
    assert torch.autograd.gradcheck(idct, (x,))


def test_mult_add_convention():
    assert dct_macs(1) == 0
    assert dct_macs(8) == 24
    assert dct_macs(100) == 700  # ceil(log2 100) = 7


@pytest.mark.parametrize("n", [1, 2, 3, 4, 7, 8, 31, 32, 33, 64, 100, 4096])
def test_scale_in_dct_domain_is_idct_of_scaled_dct(n):
    """The fused stage ACDC's fast path runs equals idct(dct(x) * d), values and gradients."""
    from lowrank.methods.dct import makhoul_order, scale_in_dct_domain

    x = torch.randn(3, n, dtype=torch.float64, requires_grad=True)
    d = torch.randn(n, dtype=torch.float64, requires_grad=True)
    perm, inverse = makhoul_order(n, x.device)
    fused = scale_in_dct_domain(x.index_select(-1, perm), d).index_select(-1, inverse)
    reference = idct(dct(x) * d)
    assert torch.allclose(fused, reference, atol=1e-12)
    for a, b in zip(torch.autograd.grad(fused.sum(), [x, d]), torch.autograd.grad(reference.sum(), [x, d])):
        assert torch.allclose(a, b, atol=1e-12)


@pytest.mark.parametrize("n", [1, 2, 3, 8, 9, 31, 64])
def test_makhoul_reorder_by_strided_copies_equals_the_gather(n):
    """to_makhoul / from_makhoul (two strided copies, faster than index_select) are x[perm] and w[inverse]."""
    perm, inverse = makhoul_order(n, torch.device("cpu"))
    x = torch.randn(3, 2, n, requires_grad=True)
    assert torch.equal(to_makhoul(x), x.index_select(-1, perm))
    assert torch.equal(from_makhoul(x), x.index_select(-1, inverse))
    assert torch.equal(from_makhoul(to_makhoul(x)), x)
    weights = torch.randn(3, 2, n)
    (from_makhoul(to_makhoul(x) * 2) * weights).sum().backward()  # autograd through both
    torch.testing.assert_close(x.grad, 2 * weights)
