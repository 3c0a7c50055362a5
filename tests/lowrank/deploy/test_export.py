"""Export: every registered method round-trips to ONNX and pt2 with the outputs of eager, the file
stores the compressed parameters (not their dense expansion), the runtime graph runs the counted
eval path, and a network that cannot be exported is one line naming the module and the operator."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn as nn

from lowrank.deploy.export import TOLERANCE, ExportRefused, export, missing_packages
from lowrank.methods import ConvSpec, get_method, list_methods

METHODS = [method.name for method in list_methods()]
SPEC = ConvSpec(16, 32, (3, 3), (1, 1), (1, 1))
needs_onnx = pytest.mark.skipif(bool(missing_packages("onnx")), reason="the export extra is not installed")


def _layer(name: str, spec: ConvSpec = SPEC) -> nn.Module:
    method = get_method(name)
    torch.manual_seed(0)
    return method.build(spec, method.hp.default if method.hp is not None else None).eval()


def _params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("fmt", ["pt2", pytest.param("onnx", marks=needs_onnx)])
@pytest.mark.parametrize("name", METHODS)
def test_every_registered_method_exports_and_computes_what_eager_computes(name, fmt, tmp_path):
    layer = _layer(name)
    images = torch.randn(6, 16, 8, 8, generator=torch.Generator().manual_seed(1))
    path = tmp_path / f"{name}.{fmt}"
    report = export(layer, fmt, path, images, _params(layer))
    assert report.passed and path.is_file() and report.bytes == path.stat().st_size
    assert report.relative_diff <= TOLERANCE and report.check_batch == 6 and report.dynamic_batch
    # the file stores the compressed parameters and O(N) fixed tables, never the dense expansion
    extra = report.stored["float_values"] - _params(layer)
    assert -256 <= extra <= 4 * max(SPEC.in_channels, SPEC.out_channels) + 64, report.stored
    if _params(layer) < SPEC.dense_params // 2:
        assert report.stored["float_values"] < SPEC.dense_params // 2


@needs_onnx
@pytest.mark.slow
def test_the_onnx_runtime_graph_runs_the_counted_eval_path(tmp_path):
    """ACDC at 16 -> 32 counts the collapsed matrix: after ONNX Runtime's load-time folding the graph is
    the convolutions alone. At 512 channels it counts the transform: the DFT runs at inference."""
    import onnx
    import onnxruntime as ort

    def runtime_ops(layer: nn.Module, images: torch.Tensor, name: str) -> set[str]:
        path = tmp_path / f"{name}.onnx"
        assert export(layer, "onnx", path, images, _params(layer)).passed
        options = ort.SessionOptions()
        options.optimized_model_filepath = str(tmp_path / f"{name}.runtime.onnx")
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        return {node.op_type for node in onnx.load(options.optimized_model_filepath).graph.node}

    small = _layer("acdc")
    assert small.acdc.counted_path() == "collapse"
    assert runtime_ops(small, torch.randn(2, 16, 8, 8), "small") == {"Conv"}
    large = get_method("acdc").build(ConvSpec(512, 512), 12).eval()
    assert large.acdc.counted_path() == "fast"
    ops = runtime_ops(large, torch.randn(2, 512, 2, 2), "large")
    assert "DFT" in ops and "Conv" not in ops


@needs_onnx
def test_hashednets_stores_its_real_weights_and_computes_the_index(tmp_path):
    layer = _layer("hashed")
    report = export(layer, "onnx", tmp_path / "h.onnx", torch.randn(2, 16, 8, 8), _params(layer))
    assert report.stored["float_values"] <= _params(layer) + 1
    assert report.stored["other_values"] < 256  # no stored index: the hash is in the graph
    assert {"BitwiseXor", "Mod"} <= set(report.stored["ops"])
    assert layer.hashed.codes is not None  # the layer itself keeps its index buffer (export worked on a copy)


class DataDependent(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:
            return x * 2
        return x


class ComplexPick(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(2, 3, 8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = torch.complex(self.w[0], self.w[1])
        return (torch.fft.fft(torch.complex(x, torch.zeros_like(x))) * c[1]).real


def _wrapped(inner: nn.Module) -> nn.Module:
    return nn.Sequential(nn.Identity(), nn.Sequential(nn.Identity(), inner)).eval()


@pytest.mark.parametrize("fmt", ["pt2", pytest.param("onnx", marks=needs_onnx)])
def test_an_untraceable_module_is_one_line_naming_it_and_the_code(fmt, tmp_path):
    with pytest.raises(ExportRefused) as refused:
        export(_wrapped(DataDependent()), fmt, tmp_path / f"x.{fmt}", torch.randn(2, 8), 0)
    message = str(refused.value)
    assert "\n" not in message and "1.1 (DataDependent)" in message and "x.sum() > 0" in message
    assert list(tmp_path.iterdir()) == []  # nothing written, no temporary left


@needs_onnx
def test_an_operator_onnx_cannot_translate_is_one_line_naming_the_module_and_the_operator(tmp_path):
    with pytest.raises(ExportRefused) as refused:
        export(_wrapped(ComplexPick()), "onnx", tmp_path / "x.onnx", torch.randn(2, 8), 48)
    message = str(refused.value)
    assert "\n" not in message and "1.1 (ComplexPick)" in message and "aten.select.int" in message
    assert list(tmp_path.iterdir()) == []


def test_a_file_that_does_not_match_eager_is_not_kept(tmp_path, monkeypatch):
    import lowrank.deploy.export as export_module

    monkeypatch.setattr(export_module, "compare", lambda runner, model, images: (1.0, 1.0))
    layer = _layer("separable")
    report = export(layer, "pt2", tmp_path / "s.pt2", torch.randn(2, 16, 8, 8), _params(layer))
    assert not report.passed and report.relative_diff == 1.0
    assert list(tmp_path.iterdir()) == []
