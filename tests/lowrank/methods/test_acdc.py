"""Stacked ACDC: agreement with an explicit scipy reference, collapse == fast, counts, init."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.fft
import torch
from torch.utils.flop_counter import FlopCounterMode

import lowrank.methods.acdc as acdc_module
from lowrank.methods import ConvSpec, get_method
from lowrank.methods.acdc import (StackedACDCLinear, choose_path, layer_cost, linear_params, pointwise_cost,
                                  riffle_permutation)

SHUFFLES = ["riffle", "random", "none"]
SHAPES = [(8, 8), (6, 10), (12, 5), (7, 7), (300, 300)]  # 300 > 256: collapse builds with the FFT


def reference(stack: StackedACDCLinear, x: np.ndarray) -> np.ndarray:
    """The stack written out with scipy's DCT and explicit permutations, in float64."""
    a, d = stack.a.detach().double().numpy(), stack.d.detach().double().numpy()
    z = np.concatenate([x, np.zeros((x.shape[0], stack.n - x.shape[1]))], axis=1)
    riffle = riffle_permutation(stack.n).numpy()
    for layer in range(stack.layers):
        z = scipy.fft.dct(z * a[layer], type=2, norm="ortho", axis=-1)
        if stack.extra_riffle:
            z = z[:, riffle]
        z = scipy.fft.idct(z * d[layer], type=2, norm="ortho", axis=-1)
        if stack.perm is not None and layer < stack.layers - 1:
            z = z[:, stack.perm.numpy()]
    y = z[:, :stack.out_features]
    return y + stack.bias.detach().double().numpy() if stack.bias is not None else y


@pytest.mark.parametrize("extra_riffle", [False, True])
@pytest.mark.parametrize("shuffle", SHUFFLES)
@pytest.mark.parametrize("shape", SHAPES)
def test_both_paths_match_the_scipy_reference(shape, shuffle, extra_riffle):
    torch.manual_seed(0)
    stack = StackedACDCLinear(*shape, layers=3, shuffle=shuffle, extra_riffle=extra_riffle, bias=True).double()
    with torch.no_grad():  # move away from the near-identity init so errors would show
        stack.a.normal_()
        stack.d.normal_()
        stack.bias.normal_()
    x = torch.randn(5, shape[0], dtype=torch.float64)
    expected = reference(stack, x.numpy())
    for path in ("fast", "collapse"):
        stack.path = path
        np.testing.assert_allclose(stack(x).detach().numpy(), expected, atol=1e-9, err_msg=path)


@pytest.mark.parametrize("extra_riffle", [False, True])
@pytest.mark.parametrize("shuffle", SHUFFLES)
@pytest.mark.parametrize("spec", [ConvSpec(8, 8, (3, 3), (1, 1), (1, 1)),
                                  ConvSpec(6, 10, (3, 3), (2, 2), (1, 1), bias=True),
                                  ConvSpec(12, 5, (1, 1), (2, 2))])
def test_conv_collapse_equals_fast_in_float32(spec, shuffle, extra_riffle):
    module = get_method("acdc").build(spec, 4, shuffle=shuffle, extra_riffle=extra_riffle)
    with torch.no_grad():
        module.acdc.a.normal_(1.0, 0.3)
        if module.acdc.bias is not None:
            module.acdc.bias.normal_()
    x = torch.randn(2, spec.in_channels, 7, 7)
    module.acdc.path = "collapse"
    collapsed = module(x)
    module.acdc.path = "fast"
    torch.testing.assert_close(module(x), collapsed, atol=1e-5, rtol=1e-4)


def test_paths_give_the_same_gradients():
    spec = ConvSpec(10, 6, (3, 3), (1, 1), (1, 1), bias=True)
    module = get_method("acdc").build(spec, 3, extra_riffle=True).double()
    x = torch.randn(2, 10, 5, 5, dtype=torch.float64)
    grads = {}
    for path in ("collapse", "fast"):
        module.zero_grad()
        module.acdc.path = path
        module(x).pow(2).sum().backward()
        grads[path] = [p.grad.clone() for p in module.parameters()]
    for g1, g2 in zip(grads["collapse"], grads["fast"]):
        torch.testing.assert_close(g1, g2)


def test_auto_path_follows_the_cost_model():
    assert choose_path(positions=64 * 32 * 32, in_features=64, out_features=64, layers=12) == "collapse"
    assert choose_path(positions=8, in_features=4096, out_features=4096, layers=12) == "fast"
    stack = StackedACDCLinear(4096, 4096, 2)
    assert stack.path_for(8) == "fast"
    stack.path = "collapse"
    assert stack.path_for(8) == "collapse"
    with pytest.raises(ValueError):
        StackedACDCLinear(8, 8, 2, path="magic")
    with pytest.raises(ValueError):
        StackedACDCLinear(8, 8, 2, shuffle="perfect")


def test_riffle_interleaves_halves():
    assert riffle_permutation(4).tolist() == [0, 2, 1, 3]
    assert riffle_permutation(5).tolist() == [0, 3, 1, 4, 2]
    assert sorted(riffle_permutation(101).tolist()) == list(range(101))


def test_random_shuffle_is_a_seeded_buffer():
    one, two = StackedACDCLinear(16, 16, 3, shuffle="random", seed=7), StackedACDCLinear(16, 16, 3, shuffle="random", seed=7)
    other = StackedACDCLinear(16, 16, 3, shuffle="random", seed=8)
    assert torch.equal(one.perm, two.perm) and not torch.equal(one.perm, other.perm)
    assert sorted(one.perm.tolist()) == list(range(16))
    assert "perm" in dict(one.named_buffers()) and "perm" not in dict(one.named_parameters())


def test_init_is_normal_mean_one_std_one_hundredth():
    torch.manual_seed(0)
    stack = StackedACDCLinear(512, 512, 16)
    for diag in (stack.a, stack.d):
        assert abs(diag.mean().item() - 1.0) < 1e-3
        assert abs(diag.std().item() - 1e-2) < 1e-3


def test_linear_substitute_shapes_and_counts():
    stack = StackedACDCLinear(784, 10, 32, bias=True)  # the notes' MNIST model: 32 layers, keep 10
    x = torch.randn(3, 2, 784)
    assert stack(x).shape == (3, 2, 10)
    assert sum(p.numel() for p in stack.parameters()) == linear_params(784, 10, 32, bias=True) == 2 * 32 * 784 + 10
    assert acdc_module.LinearACDC is StackedACDCLinear


def test_macs_formula_counts_transforms_and_collapse():
    """The fast-path term is checked by counting the DCT calls a forward makes; the collapsed term
    by FlopCounterMode on the 1x1 conv the collapse path runs."""
    spec, layers, hw = ConvSpec(64, 32, (3, 3), (1, 1), (1, 1)), 5, (6, 6)
    module = get_method("acdc").build(spec, layers)
    x = torch.randn(1, 64, *hw)
    calls = []

    def counting(fn):
        def wrapped(z):
            calls.append(z.numel())
            return fn(z)
        return wrapped

    def counting_fused(fn):  # idct(dct(v) * d) in one spectrum: two transforms of v's size
        def wrapped(v, d):
            calls.extend([v.numel(), v.numel()])
            return fn(v, d)
        return wrapped

    original = (acdc_module.dct, acdc_module.idct, acdc_module.scale_in_dct_domain)
    acdc_module.dct, acdc_module.idct = counting(original[0]), counting(original[1])
    acdc_module.scale_in_dct_domain = counting_fused(original[2])
    try:
        module.acdc.path = "fast"
        module(x)
    finally:
        acdc_module.dct, acdc_module.idct, acdc_module.scale_in_dct_domain = original
    n, positions = 64, hw[0] * hw[1]
    assert len(calls) == 2 * layers and all(c == positions * n for c in calls)
    fast_per_position = layers * (2 * n * 6 + 2 * n)  # 2 DCTs of N log2 N + 2 diagonals per layer
    assert layer_cost(n) * layers == fast_per_position

    module.acdc.path = "collapse"
    weight = module.acdc.matrix().detach().t()[:, :, None, None]
    with FlopCounterMode(display=False) as dw_counter:
        spatial = module.depthwise(x)
    with FlopCounterMode(display=False) as pw_counter:
        torch.nn.functional.conv2d(spatial, weight)
    depthwise_only = dw_counter.get_total_flops() // 2
    collapsed_per_position = pw_counter.get_total_flops() // 2 // positions
    assert collapsed_per_position == 64 * 32
    expected = depthwise_only + positions * min(fast_per_position, collapsed_per_position)
    assert get_method("acdc").macs(spec, layers, hw) == expected
    assert pointwise_cost(4096, 4096, 12) == 12 * (2 * 4096 * 12 + 2 * 4096)  # fast wins at N = 4096


def test_half_precision_input_runs_the_fast_path_in_float32():
    stack = StackedACDCLinear(12, 12, 2, path="fast")
    x = torch.randn(3, 12).to(torch.bfloat16)
    y = stack(x)
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y.float(), stack(x.float()), atol=0.05, rtol=0.05)


@pytest.mark.parametrize("shuffle", ["riffle", "random", "none"])
@pytest.mark.parametrize("n,layers", [(1, 2), (7, 3), (8, 1), (33, 4), (256, 2)])
def test_fast_path_equals_the_layer_by_layer_definition(shuffle, n, layers):
    """The fast path (one spectrum per layer, reorderings composed into one gather) is
    C^-1 D C A x per layer with the shuffle between layers, as written in the paper."""
    from lowrank.methods.dct import dct, idct

    stack = acdc_module.StackedACDCLinear(n, n, layers, shuffle=shuffle, seed=7, path="fast").double()
    with torch.no_grad():
        stack.a.normal_()
        stack.d.normal_()
    x = torch.randn(4, n, dtype=torch.float64)
    z = x
    for layer in range(layers):
        z = idct(dct(z * stack.a[layer]) * stack.d[layer])
        if stack.perm is not None and layer < layers - 1:
            z = z.index_select(-1, stack.perm)
    assert torch.allclose(stack.transform(x), z, atol=1e-12)


@pytest.mark.parametrize("n", [48, 64])
def test_tables_and_matrices_first_made_in_inference_mode_still_train(n):
    """A latency measurement (torch.inference_mode) that first built the DCT tables or the collapsed
    matrix left inference tensors in the caches: every later training step failed with "Inference
    tensors cannot be saved for backward" (the deploy tests ran before the method tests)."""
    from lowrank.methods import dct as dct_module
    from lowrank.methods.acdc import StackedACDCLinear

    for cache in (dct_module._CACHE, dct_module._SPECTRAL, dct_module._MATRICES):
        for key in [key for key in cache if n in key]:
            del cache[key]
    layer = StackedACDCLinear(n, n, 3, path="fast")
    collapsed = StackedACDCLinear(n, n, 2, path="collapse").eval()
    x = torch.randn(4, n)
    with torch.inference_mode():
        layer.eval()(x)
        collapsed(x)
        dct_module.cached_dct_matrix(n, x.device, x.dtype)
    layer.train()(x).square().sum().backward()
    assert layer.a.grad is not None and torch.isfinite(layer.a.grad).all()
    collapsed(x).square().sum().backward()  # eval with autograd on: the cached matrix, rebuilt in backward
    assert collapsed.d.grad is not None
    assert (x.requires_grad_() @ dct_module.cached_dct_matrix(n, x.device, x.dtype)).sum().backward() is None
