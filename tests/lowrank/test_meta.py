"""Shape-only work on meta: counting and solving skip value computations (issue 12: a DARTS solve with
ACDC spent its seconds in meta-device FFTs and random initialisations) without changing a figure,
and real tensors inside the mode are computed as always."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn as nn

from lowrank.count import count_model
from lowrank.meta import ShapesOnly
from lowrank.methods import acdc, hashed
from lowrank.models import create_model
from lowrank.substitute import substitute

REPO = Path(__file__).resolve().parents[2]


def _refuse(*_args, **_kwargs):
    raise AssertionError("a value computation ran on meta")


def test_counting_on_meta_runs_no_structured_layer(monkeypatch):
    with torch.device("meta"):
        model = create_model("tiny_convnet", num_classes=10, in_channels=1)
    substitute(model, "acdc", 2)
    real = count_model(model.to_empty(device="cpu"), (1, 8, 8))  # the figures with the layers really run
    monkeypatch.setattr(acdc.StackedACDCLinear, "transform", _refuse)
    monkeypatch.setattr(torch.fft, "rfft", _refuse)
    on_meta = count_model(model.to("meta"), (1, 8, 8))
    assert (on_meta.params, on_meta.macs) == (real.params, real.macs)
    assert [(r.name, r.macs, r.in_shape, r.out_shape) for r in on_meta.layers] == \
        [(r.name, r.macs, r.in_shape, r.out_shape) for r in real.layers]


def test_hash_codes_on_meta_are_shapes_only():
    codes = hashed.hash_codes(1000, 37, seed=5, device="meta")
    assert codes.is_meta and codes.shape == (1000,) and codes.dtype == torch.int32
    real = hashed.hash_codes(1000, 37, seed=5)
    assert real.dtype == torch.int32 and int(real.abs().max()) < 37 + 1  # the CPU codes are still hashed


def test_shapes_only_skips_meta_initialisation_and_activations():
    with ShapesOnly():
        weight = torch.empty(4, 3, device="meta")
        assert nn.init.kaiming_uniform_(weight) is weight
        assert torch.relu(weight).shape == weight.shape and torch.relu(weight).is_meta
        out = nn.functional.batch_norm(torch.empty(2, 3, 5, 5, device="meta"), None, None, training=True)
        assert out.shape == (2, 3, 5, 5)


def test_shapes_only_leaves_real_tensors_alone():
    torch.manual_seed(0)
    expected = nn.init.kaiming_uniform_(torch.empty(8, 8))
    torch.manual_seed(0)
    with ShapesOnly():
        got = nn.init.kaiming_uniform_(torch.empty(8, 8))
        x = torch.tensor([-1.0, 2.0])
        assert torch.equal(torch.relu(x), torch.tensor([0.0, 2.0]))
        assert torch.equal(nn.functional.relu(x.clone(), inplace=True), torch.tensor([0.0, 2.0]))
    assert torch.equal(got, expected)


@pytest.mark.parametrize("method,hp", [("acdc", 3), ("afdf", 2), ("block_acdc", 2), ("sep_hashed", 0.2), ("tt", 0.5),
                                       ("generic", 0.3)])
def test_build_network_figures_do_not_depend_on_the_device(method, hp):
    """The worker builds on the CPU, count and compare on meta: the same numbers either way."""
    from lowrank.build import build_network
    from lowrank.config import load

    config = load(REPO / "presets" / "quickstart.yaml", [f"substitute.method={method}", f"substitute.hp={hp}",
                                              "substitute.options={}"])
    cpu = build_network(config, 10, (1, 8, 8), device="cpu")
    with torch.device("meta"):
        meta = build_network(config, 10, (1, 8, 8), device="meta")
    assert (meta.params, meta.macs, meta.dense_params, meta.dense_macs) == \
        (cpu.params, cpu.macs, cpu.dense_params, cpu.dense_macs)


@pytest.mark.parametrize("conv", [
    nn.Conv2d(3, 8, 3), nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.Conv2d(3, 8, (1, 5), padding=(0, 2)),
    nn.Conv2d(4, 8, 3, dilation=2, padding=2, groups=2), nn.Conv2d(3, 8, 4, padding="same"),
    nn.Conv2d(3, 8, 5, padding="valid", stride=(2, 1)), nn.Conv2d(3, 8, 7, stride=3, padding=3, bias=False),
], ids=["plain", "strided", "1x5", "dilated-grouped", "same-even", "valid", "7x7-s3"])
def test_shape_rules_match_what_torch_computes(conv):
    """Every op ShapesOnly answers for itself gives the shape the real op gives."""
    x = torch.randn(2, conv.in_channels, 11, 13)
    expected = conv(x).shape
    with ShapesOnly():
        assert conv.to("meta")(x.to("meta")).shape == expected
        a, b = torch.empty(2, 1, 5, device="meta"), torch.empty(3, 1, device="meta")
        assert (a + b).shape == (torch.zeros(2, 1, 5) + torch.zeros(3, 1)).shape
        assert (a * 2).shape == a.shape and torch.mul(a, b).shape == (2, 3, 5)
        assert nn.functional.adaptive_avg_pool2d(torch.empty(2, 3, 7, 9, device="meta"), (1, None)).shape == (2, 3, 1, 9)
        assert nn.functional.linear(torch.empty(4, 6, device="meta"), torch.empty(5, 6, device="meta")).shape == (4, 5)
        parts = [torch.empty(2, c, 3, device="meta") for c in (1, 4, 2)]
        assert torch.cat(parts, dim=1).shape == (2, 7, 3) and torch.cat(parts, -2).shape == (2, 7, 3)
        assert torch.cat([torch.empty(2, 3, device="meta")] * 2).shape == (4, 3)
        for dim in (0, 1, 2, -1, -3):
            same = [torch.empty(2, 3, device="meta")] * 3
            assert torch.stack(same, dim=dim).shape == torch.stack([torch.zeros(2, 3)] * 3, dim=dim).shape
        for compare in (torch.eq, torch.ne, torch.lt, torch.Tensor.ge, torch.Tensor.gt, torch.Tensor.le):
            got = compare(a, b)
            assert got.shape == (2, 3, 5) and got.dtype == torch.bool
            assert compare(a, 0).shape == a.shape and compare(a, 0).dtype == torch.bool
        assert (a != 0).dtype == torch.bool and (a == b).shape == (2, 3, 5)


def test_shape_rules_leave_torch_to_refuse_what_it_refuses():
    with ShapesOnly():
        with pytest.raises(RuntimeError):
            torch.stack([torch.empty(2, 3, device="meta"), torch.empty(3, 2, device="meta")])
        with pytest.raises(IndexError):
            torch.stack([torch.empty(2, 3, device="meta")] * 2, dim=3)


@pytest.mark.subprocess
@pytest.mark.parametrize("preset,overrides", [
    ("mnist_acdc.yaml", []),  # the model's own ACDC layers (1.15 s on the first count before)
    ("darts_student.yaml", ["substitute.method=acdc", "substitute.budget=0.1", "substitute.hp=null"]),
    ("darts_student.yaml", ["substitute.method=afdf", "substitute.budget=0.1", "substitute.hp=null"]),
    ("darts_student.yaml", ["substitute.method=block_acdc", "substitute.budget=0.1", "substitute.hp=null",
                            "substitute.options={}"]),
], ids=["mnist-acdc", "darts-acdc", "darts-afdf", "darts-block-acdc"])
def test_a_meta_build_of_the_fft_layers_imports_no_compiler(preset, overrides):
    """Issue 24: the first meta count of an ACDC network in a process took ~1 s more than the next,
    importing torch._dynamo (the Python meta kernels of the FFTs and of elementwise ops do on first
    use); the shape rules and the layers' shape-only meta path leave it unimported."""
    import subprocess
    import sys

    code = ("import sys, torch; from lowrank.build import build_network; from lowrank.config import load; "
            "from lowrank.data import dataset_shape; "
            "c = load(sys.argv[1], sys.argv[2:]); n, shape = dataset_shape(c.data)\n"
            "with torch.device('meta'): net = build_network(c, n, shape, device='meta')\n"
            "print(net.params, 'torch._dynamo' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code, str(REPO / "presets" / preset), *overrides],
                          capture_output=True, text=True, cwd=REPO, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[-1] == "False", done.stdout
