"""Declared mult-adds == what a forward executes, for every registered method on many conv shapes.

The reference is independent of the methods' formulas: ``torch.utils.flop_counter.FlopCounterMode``
counts every executed conv/mm/addmm/bmm (2 FLOPs per mult-add), a dispatch mode counts the
elements of every executed elementwise ``aten.mul`` (4 per complex element: a complex product is
4 real mult-adds; the diagonal layers of ACDC/AFDF), and only the transform stage (our DCT, the
complex FFT), whose ops are not mult-adds to either counter, is charged per call by its documented
cost (``dct_macs(n)`` per length-n vector, ``2 n ceil(log2 n)`` per complex FFT) — with both
counters paused inside it.
"""

from __future__ import annotations

import contextlib
import copy
import math

import pytest
import torch
import torch.nn as nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

import lowrank.methods.acdc as acdc_module
import lowrank.methods.block_acdc as block_module
from lowrank.methods import ConvSpec, get_method, list_methods
from lowrank.methods.dct import dct_macs

aten = torch.ops.aten

SPECS = [
    ConvSpec(8, 8, (3, 3), (1, 1), (1, 1)),
    ConvSpec(16, 32, (3, 3), (2, 2), (1, 1), bias=True),
    ConvSpec(32, 16, (1, 1)),
    ConvSpec(12, 6, (1, 1), (2, 2)),
    ConvSpec(6, 12, (1, 1), (2, 2), (1, 1), bias=True),
    ConvSpec(10, 6, (3, 3), (1, 1), (2, 2), (2, 2)),
    ConvSpec(5, 7, (3, 1), (1, 1), (1, 0)),
    ConvSpec(64, 64, (1, 1)),                          # N = 64: shallow ACDC stacks run the fast path
    ConvSpec(64, 128, (3, 3), (1, 1), (1, 1)),
    ConvSpec(20, 20, (5, 5), (2, 2), (2, 2), bias=True),
    ConvSpec(16, 32, (3, 3), (1, 1), (1, 1), groups=4),  # grouped: only dense takes it
    ConvSpec(12, 12, (3, 3), (1, 1), (1, 1), groups=12),  # depthwise
]
SPEC_IDS = [f"{s.in_channels}-{s.out_channels}-k{s.kernel_size[0]}x{s.kernel_size[1]}-s{s.stride[0]}-g{s.groups}"
            for s in SPECS]
IN_HW = (9, 7)

# options worth covering beside the defaults (each path, shuffles, groups)
EXTRA_OPTIONS = {
    "acdc": [{"path": "fast"}, {"path": "collapse"}, {"shuffle": "random", "extra_riffle": True}],
    "block_acdc": [{"groups": 2, "shuffle": "none"}],
    "tt": [{"dims": 2}], "tucker": [{"dims": 2}], "cp": [{"dims": 3}],
    "hashed": [{"index": "recompute"}],
}


def hp_values(method) -> list:
    """A few hyperparameters per method: for the stacked ones both 1-2 layers (the fast path wins
    at N = 64) and the default (the collapsed matrix wins)."""
    hp = method.hp
    if hp is None:
        return [None]
    if hp.kind is int:
        return sorted({1, 2, int(hp.default)})
    return [hp.default, round(hp.low + 0.7 * (hp.high - hp.low), 4)]


CASES = [(m.name, hp, options) for m in list_methods() for hp in hp_values(m)
         for options in [{}] + EXTRA_OPTIONS.get(m.name, [])]


class ExecutedMacs(TorchDispatchMode):
    """Elementwise float/complex products executed (``aten.mul``; integer hashing is not a mult-add),
    plus transform stages charged per call."""

    def __init__(self) -> None:
        super().__init__()
        self.muls = 0
        self.transforms = 0
        self.paused = False

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        arithmetic = isinstance(out, torch.Tensor) and (out.is_floating_point() or out.is_complex())
        if not self.paused and arithmetic and func in (aten.mul.Tensor, aten.mul_.Tensor):
            self.muls += out.numel() * (4 if out.is_complex() else 1)
        return out


@contextlib.contextmanager
def counted_transforms(mode: ExecutedMacs, flops: FlopCounterMode, monkeypatch):
    """Charge each DCT/IDCT call dct_macs(n) and each complex FFT 2 n ceil(log2 n) per vector."""
    def charge(fn, per_vector):
        def wrapped(z, *args, **kwargs):
            n = z.shape[kwargs.get("dim", -1)]
            mode.transforms += z.numel() // n * per_vector(n)
            before = flops.get_total_flops()
            mode.paused = True
            try:
                return fn(z, *args, **kwargs)
            finally:
                mode.paused = False
                assert flops.get_total_flops() == before  # the transform itself runs no matmul
        return wrapped

    fft_cost = lambda n: 2 * n * math.ceil(math.log2(n)) if n > 1 else 0  # noqa: E731 - afdf's convention
    for module in (acdc_module, block_module):
        monkeypatch.setattr(module, "dct", charge(module.dct, dct_macs))
        monkeypatch.setattr(module, "idct", charge(module.idct, dct_macs))
    # ACDC's fused stage idct(dct(x) * d): two transforms and the diagonal, n products per vector
    monkeypatch.setattr(acdc_module, "scale_in_dct_domain",
                        charge(acdc_module.scale_in_dct_domain, lambda n: 2 * dct_macs(n) + n))
    monkeypatch.setattr(torch.fft, "fft", charge(torch.fft.fft, fft_cost))
    monkeypatch.setattr(torch.fft, "ifft", charge(torch.fft.ifft, fft_cost))
    yield


def executed(module: nn.Module, x: torch.Tensor, monkeypatch) -> int:
    """Mult-adds one forward of ``module`` on ``x`` executes (counted, not declared)."""
    flops, mode = FlopCounterMode(display=False), ExecutedMacs()
    with counted_transforms(mode, flops, monkeypatch), flops, mode:
        module(x)
    monkeypatch.undo()
    return flops.get_total_flops() // 2 + mode.muls + mode.transforms


def build(name: str, spec: ConvSpec, hp, options: dict):
    method = get_method(name)
    try:
        return method.build(spec, hp, **options)
    except ValueError as error:
        assert spec.groups != 1 and "groups" in str(error)  # compressed methods refuse grouped convs
        return None


@pytest.mark.parametrize("spec", SPECS, ids=SPEC_IDS)
@pytest.mark.parametrize("name,hp,options", CASES)
def test_declared_eval_macs_equal_a_batch_one_eval_forward(name, hp, options, spec, monkeypatch):
    module = build(name, spec, hp, options)
    if module is None:
        return
    module.eval()
    x = torch.randn(1, spec.in_channels, *IN_HW)
    with torch.no_grad():
        module(x)  # the first eval forward builds and caches any collapsed/reconstructed weight
        counted = executed(module, x, monkeypatch)
    declared = get_method(name).macs(spec, hp, IN_HW, **options)
    assert declared == module.macs(IN_HW) == counted


@pytest.mark.parametrize("spec", SPECS[:10:3], ids=SPEC_IDS[:10:3])
@pytest.mark.parametrize("name,hp,options", CASES)
def test_train_macs_equal_a_training_forward(name, hp, options, spec, monkeypatch):
    """A training forward (autograd on, batch 3) executes what ``train_macs`` says: per image, plus
    one matrix build / reconstruction per forward where the layer has one."""
    module = build(name, spec, hp, options)
    if module is None:
        return
    x = torch.randn(3, spec.in_channels, *IN_HW)
    module.train()(x)  # process-wide tables (the DCT matrix of each N) are built once, not per forward
    for _ in range(2):  # nothing is cached while training: the second forward pays the build again
        assert module.train_macs(x) == executed(module.train(), x, monkeypatch)
    assert module.train_macs(x) >= 3 * module.macs(IN_HW)


def test_eval_cache_follows_parameter_updates():
    """The cached matrix is rebuilt after an in-place update and never reused while training."""
    spec = ConvSpec(64, 64, (1, 1))
    for name in ("acdc", "tt"):
        module = get_method(name).build(spec, 12 if name == "acdc" else 0.3).eval()
        x = torch.randn(1, 64, 4, 4)
        with torch.no_grad():
            before = module(x)
            for p in module.parameters():
                p.mul_(1.5)
            after = module(x)
        assert not torch.allclose(before, after)
        torch.testing.assert_close(after, module.train()(x).detach(), rtol=1e-4, atol=1e-4)


def test_wrn_28_10_acdc_executes_its_declared_mult_adds(monkeypatch):
    """The issue's case (WRN-28-10 at budget 0.02: ACDC with 21 layers) on the real layer shapes:
    each distinct substituted conv executes its declared figure at batch 1 in eval mode."""
    from lowrank.models import create_model
    from lowrank.substitute import plan_substitution

    with torch.device("meta"):
        plan = plan_substitution(create_model("wrn", depth=28, widen_factor=10, num_classes=10))
    seen = {}
    for name, spec in plan:
        seen.setdefault(spec, name)
    hw = {16 * 10: (32, 32), 32 * 10: (16, 16), 64 * 10: (8, 8)}
    for spec in seen:
        module = get_method("acdc").build(spec, 21).eval()
        in_hw = hw[spec.out_channels] if spec.stride == (1, 1) else tuple(2 * s for s in hw[spec.out_channels])
        x = torch.randn(1, spec.in_channels, *in_hw)
        with torch.no_grad():
            module(x)
            assert executed(module, x, monkeypatch) == get_method("acdc").macs(spec, 21, in_hw)


COLLAPSING = [(name, hp) for name, hp in (("acdc", 12), ("afdf", None), ("block_acdc", None), ("tt", 0.5),
                                          ("tucker", 0.5), ("cp", 0.5))]


def _hp(name, hp):
    return get_method(name).hp.default if hp is None else hp


@pytest.mark.parametrize("name,hp", COLLAPSING)
def test_an_eval_forward_with_autograd_on_executes_the_declared_figure_and_trains_correctly(name, hp, monkeypatch):
    """``model.eval()`` without ``torch.no_grad()`` (the way FLOP counters and many scripts call a model)
    executes the declared mult-adds too; the gradient (the matrix rebuilt in backward) is the one of the
    explicitly built matrix."""
    spec = ConvSpec(16, 24, (3, 3), (1, 1), (1, 1), bias=True)
    hp = _hp(name, hp)
    module = get_method(name).build(spec, hp).eval()
    x = torch.randn(1, 16, *IN_HW)
    module(x)  # builds and caches
    assert executed(module, x, monkeypatch) == get_method(name).macs(spec, hp, IN_HW)
    reference = copy.deepcopy(module)
    for sub in reference.modules():  # the reference builds its matrix differentiably in every forward
        if hasattr(sub, "_cache"):
            monkeypatch.setattr(sub, "weight", sub.matrix if hasattr(sub, "matrix") else sub.dense_weight)
    module(x).square().sum().backward()
    reference(x).square().sum().backward()
    for (n, p), q in zip(module.named_parameters(), reference.parameters()):
        assert (p.grad is None) == (q.grad is None), n
        if p.grad is not None:
            torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-6, msg=n)


@pytest.mark.parametrize("name,hp", COLLAPSING)
def test_the_eval_cache_is_dropped_when_the_mode_changes(name, hp):
    """A write the version counter cannot see (``p.data``, as old-style code updates weights) is picked up at
    the next train()/eval() switch, and a changed buffer (the random shuffle) rebuilds the matrix."""
    spec = ConvSpec(16, 24, (3, 3), (1, 1), (1, 1))
    module = get_method(name).build(spec, _hp(name, hp)).eval()
    x = torch.randn(2, 16, *IN_HW)

    def fresh():
        clone = copy.deepcopy(module)
        for sub in clone.modules():
            if hasattr(sub, "_cache"):
                sub._cache = type(sub._cache)()
        return clone.eval()(x)

    with torch.no_grad():
        module(x)
        for p in module.parameters():
            p.data.mul_(1.3)
        module.train()
        module.eval()
        torch.testing.assert_close(module(x), fresh())
        for b in module.buffers():
            if b.dtype == torch.long and b.numel() > 1:
                b.copy_(b.flip(0))
        torch.testing.assert_close(module(x), fresh())
