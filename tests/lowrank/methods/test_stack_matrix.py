"""``stack_matrix`` of acdc, block_acdc and afdf: the layer's own map as one batched product of its
layer matrices (what ``lowrank study approx`` fits), against the transform path and the forward."""

from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from lowrank.methods._collapsed import chain_product
from lowrank.methods.acdc import StackedACDCLinear
from lowrank.methods.afdf import StackedAFDFLinear
from lowrank.methods.block_acdc import BlockACDCLinear

SHAPES = [(8, 8), (6, 10), (12, 5)]


def scrambled(layer: torch.nn.Module) -> torch.nn.Module:
    """Diagonals far from the identity (double precision), so a wrong factor cannot pass."""
    layer = layer.double()
    with torch.no_grad():
        for p in layer.parameters():
            p.normal_(0, 1)
    return layer


def assert_is_the_layer(layer: torch.nn.Module) -> None:
    w = layer.stack_matrix()
    torch.testing.assert_close(w, layer.transform(layer.basis())[:, :layer.out_features], rtol=1e-10, atol=1e-10)
    x = torch.randn(5, layer.in_features, dtype=torch.float64)
    for path in ("fast", "collapse"):
        layer.path = path
        torch.testing.assert_close(layer(x), x @ w, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("layers", [1, 2, 3, 5, 8])
def test_chain_product_is_the_sequential_product(layers):
    factors = torch.randn(2, layers, 4, 4, dtype=torch.float64)
    for batch in range(2):
        expected = torch.eye(4, dtype=torch.float64)
        for k in range(layers):
            expected = expected @ factors[batch, k]
        torch.testing.assert_close(chain_product(factors)[batch], expected)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("layers", [1, 3, 4])
@pytest.mark.parametrize("shuffle", ["riffle", "random", "none"])
@pytest.mark.parametrize("extra_riffle", [False, True])
def test_acdc_stack_matrix_is_the_layer(shape, layers, shuffle, extra_riffle):
    torch.manual_seed(layers)
    assert_is_the_layer(scrambled(StackedACDCLinear(*shape, layers, shuffle=shuffle, extra_riffle=extra_riffle, seed=3)))


@pytest.mark.parametrize("shape", SHAPES + [(12, 12)])
@pytest.mark.parametrize("layers", [1, 4])
@pytest.mark.parametrize("groups", [1, 3, 4])
@pytest.mark.parametrize("shuffle", ["riffle", "random", "none"])
def test_block_acdc_stack_matrix_is_the_layer(shape, layers, groups, shuffle):
    torch.manual_seed(groups)
    assert_is_the_layer(scrambled(BlockACDCLinear(*shape, layers, groups=groups, shuffle=shuffle, seed=1)))


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("layers", [1, 2, 3, 6])
def test_afdf_stack_matrix_is_the_layer(shape, layers):
    torch.manual_seed(layers)
    assert_is_the_layer(scrambled(StackedAFDFLinear(*shape, layers)))


@pytest.mark.parametrize("make", [lambda: StackedACDCLinear(8, 8, 3, shuffle="random"),
                                  lambda: BlockACDCLinear(8, 8, 3, groups=2),
                                  lambda: StackedAFDFLinear(8, 8, 3)], ids=["acdc", "block_acdc", "afdf"])
def test_stack_matrix_batches_diagonals_and_gives_the_layers_gradients(make):
    torch.manual_seed(0)
    layers = [scrambled(make()) for _ in range(3)]
    a = torch.stack([layer.a.detach() for layer in layers]).requires_grad_()
    d = torch.stack([layer.d.detach() for layer in layers]).requires_grad_()
    target = torch.randn(3, 8, 8, dtype=torch.float64)
    batched = layers[0].stack_matrix(a=a, d=d)
    ((batched - target) ** 2).sum().backward()
    for k, layer in enumerate(layers):
        own = layer.transform(layer.basis())  # the FFT path, with autograd
        torch.testing.assert_close(batched[k], own.detach(), rtol=1e-10, atol=1e-10)
        ((own - target[k]) ** 2).sum().backward()
        torch.testing.assert_close(a.grad[k], layer.a.grad, rtol=1e-8, atol=1e-10)
        torch.testing.assert_close(d.grad[k], layer.d.grad, rtol=1e-8, atol=1e-10)


class CountOps(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += 1
        return func(*args, **(kwargs or {}))


def step_ops(layer: torch.nn.Module) -> int:
    """Tensor operations of one forward + backward through stack_matrix (3 seeds batched)."""
    a = torch.stack([layer.a.detach()] * 3).requires_grad_()
    d = torch.stack([layer.d.detach()] * 3).requires_grad_()
    with CountOps() as ops:
        (layer.stack_matrix(a=a, d=d) ** 2).sum().backward()
    return ops.count


@pytest.mark.parametrize("make", [lambda L: StackedACDCLinear(32, 32, L, shuffle="random"),
                                  lambda L: BlockACDCLinear(32, 32, L), lambda L: StackedAFDFLinear(32, 32, L)],
                         ids=["acdc", "block_acdc", "afdf"])
def test_stack_matrix_op_count_grows_with_log_layers(make):
    """What makes ``lowrank study approx`` fast: 30 more layers add a few operations per tree level
    (log2 L levels), under 4 per layer, where the per-layer transform runs a dozen or more each."""
    step_ops(make(2))  # builds the cached transform matrices
    two, thirty_two = step_ops(make(2)), step_ops(make(32))
    assert thirty_two - two < 4 * 30
