"""Export the deployable network to ONNX or pt2 and check that the file computes what eager does.

Both formats start from one ``torch.export`` trace of the eval-mode network with a dynamic batch
dimension (one file serves batch 1 and batch 256). While tracing, structured layers put their
weight build in the graph instead of their cached matrix (``torch.compiler.is_exporting()`` in
:mod:`lowrank.methods`): the file stores the compressed parameters, never their dense expansion,
and the runtime builds the weight once at load (ONNX Runtime folds every constant subgraph when it
opens a session), which is what the eval cache does in PyTorch.

- ``onnx``: ``torch.onnx.export`` (the dynamo exporter) of that trace, then one pass of
  onnxscript's constant folding that never folds a value computed from a parameter and keeps
  small constants only (so the hash indices of HashedNets and the collapsed ACDC matrices stay
  computations, not stored tensors); needs the ``export`` extra (onnx, onnxruntime, onnxscript).
- ``pt2``: ``torch.export.save`` of the trace (load with ``torch.export.load``; AOTInductor
  compiles it ahead of time).

A network that cannot be traced or translated is refused with one line naming the module and
the operator (:class:`ExportRefused`), never a traceback.
"""

from __future__ import annotations

import contextlib
import copy
import io
import linecache
import logging
import math
import os
import re
import tempfile
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
import torch.nn as nn

from ..errors import UserError
from ..extras import missing, require
from ..rundir import file_mode

FORMATS = ("onnx", "pt2")
SUFFIX = {"onnx": ".onnx", "pt2": ".pt2"}
# The exported file must compute what eager does: max |exported - eager| over the check batch,
# relative to max(1, max |eager|) so deep networks with large logits are judged alike (fp32).
TOLERANCE = 1e-4
FOLD_OUTPUT_LIMIT = 256  # constants up to this many elements are stored folded; larger stay computed
FLOAT_TYPES = (1, 10, 11, 16)  # ONNX TensorProto FLOAT, FLOAT16, DOUBLE, BFLOAT16


class ExportRefused(UserError):
    """A network that cannot be exported: names the module and the operator."""


def missing_packages(fmt: str) -> list[str]:
    """The packages ``fmt`` needs that are not installed (empty: ready): onnx needs the export extra."""
    return missing("export") if fmt == "onnx" else []


def require_format(fmt: str, key: str = "--format") -> None:
    """Refuse an unknown format or one whose extra is not installed, before anything is written."""
    if fmt not in FORMATS:
        raise UserError(f"unknown export format {fmt!r}", key=key, hint=f"one of: {', '.join(FORMATS)}")
    if fmt == "onnx":
        require("export", key, f"{fmt} export")


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence the exporters' progress lines, warnings and failure dumps (we report in one line)."""
    loggers = [logging.getLogger(name) for name in ("torch.export", "torch._export", "torch._dynamo",
                                                    "torch.fx.experimental.symbolic_shapes", "torch.onnx",
                                                    "torch._subclasses.fake_tensor", "onnxscript")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    sink = io.StringIO()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(sink):
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


# ---------------------------------------------------------------- tracing


def prepared(model: nn.Module) -> nn.Module:
    """An eval-mode copy of ``model`` ready to trace: every submodule that declares ``for_export()``
    (a HashedNets index buffer the trace recomputes) has been told; ``model`` itself is untouched."""
    copied = copy.deepcopy(model).eval()
    for module in copied.modules():
        hook = getattr(module, "for_export", None)
        if callable(hook):
            hook()
    return copied


def _module_names(model: nn.Module) -> dict[int, str]:
    return {id(module): name or "(root)" for name, module in model.named_modules()}


def _refusal_from_trace(error: BaseException, model: nn.Module, fmt: str) -> ExportRefused:
    """The innermost module of ``model`` on the failing call stack, and the line it was running."""
    names = _module_names(model)
    where, line = None, ""
    tb = error.__traceback__
    while tb is not None:
        owner = tb.tb_frame.f_locals.get("self")
        if isinstance(owner, nn.Module) and id(owner) in names and tb.tb_frame.f_code.co_name == "forward":
            where = f"{names[id(owner)]} ({type(owner).__name__})"
            line = linecache.getline(tb.tb_frame.f_code.co_filename, tb.tb_lineno).strip()
        tb = tb.tb_next
    reason = _first_line(error)
    what = f"at `{line}`: {reason}" if line else reason
    return ExportRefused(f"cannot export to {fmt}: module {where or '(unknown)'} cannot be traced {what}",
                         hint="only code torch.export can trace exports: no data-dependent Python control flow "
                              "or .item() in forward")


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    first = text[0] if text else type(error).__name__
    return f"{type(error).__name__}: {first[:200]}"


def trace(model: nn.Module, example: torch.Tensor, fmt: str = "pt2") -> torch.export.ExportedProgram:
    """``torch.export`` of the eval-mode ``model`` with a dynamic batch dimension (a model whose code
    fixes the batch size is traced at ``example``'s batch instead)."""
    batch = torch.export.Dim.DYNAMIC
    with quiet(), torch.no_grad():
        try:
            return torch.export.export(model, (example,), dynamic_shapes=({0: batch},))
        except Exception as error:  # noqa: BLE001 - a network we cannot trace is refused in one line
            if "Constraints violated" in str(error) or "specialized" in str(error):
                try:
                    return torch.export.export(model, (example,))
                except Exception as static_error:  # noqa: BLE001
                    raise _refusal_from_trace(static_error, model, fmt) from None
            raise _refusal_from_trace(error, model, fmt) from None


def dynamic_batch(program: torch.export.ExportedProgram) -> bool:
    """Whether the traced program takes any batch size (its input's first dimension is symbolic)."""
    for node in program.graph.nodes:
        if node.op == "placeholder" and node.name in program.graph_signature.user_inputs:
            value = node.meta.get("val")
            return value is not None and not isinstance(value.shape[0], int)
    return False


# ---------------------------------------------------------------- ONNX


_NODE = re.compile(r"translating node %(\S+)\s*:.*?target=([\w.]+)")


def _refusal_from_onnx(error: BaseException, program: torch.export.ExportedProgram) -> ExportRefused:
    """Which graph node the ONNX translation failed on: its operator and the module it came from."""
    chain, cause = [], error
    while cause is not None:
        chain.append(cause)
        cause = cause.__cause__ or cause.__context__
    node_name = target = None
    for item in chain:
        match = _NODE.search(str(item))
        if match:
            node_name, target = match.group(1), match.group(2)
    module = "(unknown)"
    for node in program.graph.nodes:
        if node.name == node_name:
            stack = node.meta.get("nn_module_stack") or {}
            if stack:
                path, kind = list(stack.values())[-1]
                kind = getattr(kind, "__name__", str(kind).rsplit(".", 1)[-1].strip("'>"))
                module = f"{path or '(root)'} ({kind})"
            break
    operator = (target or "an operator").replace("torch.ops.", "")
    detail = _first_line(chain[-1]).split(": ", 1)[-1]
    return ExportRefused(f"cannot export to onnx: module {module} uses {operator}, which the ONNX exporter cannot "
                         f"translate ({detail[:160]})",
                         hint="export --format pt2 keeps every PyTorch operator")


def _fold_constants(model_proto: Any, parameter_names: set[str]) -> Any:
    """onnxscript's constant folding (CastLike resolved, shape arithmetic folded) that never folds a
    value computed from a parameter and stores only small constants; unused nodes removed."""
    import onnx_ir as ir
    from onnx_ir.passes import common
    from onnxscript.optimizer import _constant_folding

    model = ir.serde.deserialize_model(model_proto)
    derived = set(parameter_names)
    for node in model.graph:  # topological order: everything downstream of a parameter
        if any(value is not None and value.name in derived for value in node.inputs):
            derived.update(output.name for output in node.outputs)

    def should_fold(node: Any) -> bool | None:
        return False if any(value is not None and value.name in derived for value in node.inputs) else None

    ir.passes.Sequential(
        common.InlinePass(),
        _constant_folding.FoldConstantsPass(shape_inference=True, input_size_limit=8192,
                                            output_size_limit=FOLD_OUTPUT_LIMIT, should_fold=should_fold),
        common.RemoveUnusedNodesPass(),
        common.LiftConstantsToInitializersPass(lift_all_constants=True, size_limit=0),
        common.DeduplicateInitializersPass(),
        common.CommonSubexpressionEliminationPass(),
    )(model)
    return ir.serde.serialize_model(model)


def write_onnx(model: nn.Module, program: torch.export.ExportedProgram, example: torch.Tensor, path: Path) -> None:
    """The ONNX file of the traced ``program`` (one file; weights inside it up to ONNX's 2 GB limit)."""
    import onnx

    with quiet():
        try:
            onnx_program = torch.onnx.export(program, (example,), dynamo=True, optimize=False, verbose=False,
                                             input_names=["images"], output_names=["logits"])
        except Exception as error:  # noqa: BLE001 - refused in one line
            raise _refusal_from_onnx(error, program) from None
        folded = _fold_constants(onnx_program.model_proto, {name for name, _ in model.named_parameters()})
    if folded.ByteSize() > 2_000_000_000:  # protobuf's limit for one file
        raise UserError("the network is over 2 GB as one ONNX file", hint="export --format pt2")
    onnx.save_model(folded, str(path))


def onnx_stored(path: Path) -> dict[str, int]:
    """What an ONNX file stores: float values (parameters and fixed tables), other values (indices)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    floats = others = 0
    for tensor in model.graph.initializer:
        count = math.prod(tensor.dims) if tensor.dims else 1
        if tensor.data_type in FLOAT_TYPES:
            floats += count
        else:
            others += count
    ops: dict[str, int] = {}
    for node in model.graph.node:
        ops[node.op_type] = ops.get(node.op_type, 0) + 1
    return {"float_values": floats, "other_values": others, "tensors": len(model.graph.initializer),
            "nodes": len(model.graph.node), "ops": dict(sorted(ops.items()))}


def onnx_session(path: Path, threads: int, device: torch.device | str = "cpu") -> Any:
    """An ONNX Runtime session on ``path``: all graph optimisations (constant folding builds the
    structured layers' weights once here), ``threads`` intra-op threads, no spinning between runs
    (spinning threads would steal cores from the PyTorch candidates timed beside it)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = int(threads)
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    providers = ["CPUExecutionProvider"]
    if torch.device(device).type == "cuda":
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise UserError("onnxruntime has no CUDA provider here", key="--mode",
                            hint="pip install onnxruntime-gpu, or time onnx with --device cpu")
        providers = ["CUDAExecutionProvider"]
    return ort.InferenceSession(str(path), options, providers=providers)


def onnx_runner(session: Any) -> Callable[[torch.Tensor], torch.Tensor]:
    """A callable running ``session`` on a (CPU) tensor batch and returning the logits tensor."""
    name = session.get_inputs()[0].name

    def run(images: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(session.run(None, {name: images.detach().cpu().numpy()})[0])

    return run


# ---------------------------------------------------------------- pt2


def write_pt2(program: torch.export.ExportedProgram, path: Path) -> None:
    """The traced program as a pt2 archive (``torch.export.save``)."""
    with quiet():
        torch.export.save(program, str(path))


def pt2_stored(program: torch.export.ExportedProgram) -> dict[str, int]:
    """What a pt2 archive stores: float values (state dict and constants), other values."""
    floats = others = 0
    tensors = [*program.state_dict.values(), *(c for c in program.constants.values() if isinstance(c, torch.Tensor))]
    for tensor in tensors:
        if tensor.is_floating_point():
            floats += tensor.numel()
        else:
            others += tensor.numel()
    ops = sum(1 for node in program.graph.nodes if node.op == "call_function")
    return {"float_values": floats, "other_values": others, "tensors": len(tensors), "nodes": ops}


def pt2_runner(path: Path) -> Callable[[torch.Tensor], torch.Tensor]:
    """A callable running the pt2 archive at ``path`` (``torch.export.load``) on a batch."""
    with quiet():
        module = torch.export.load(str(path)).module()

    def run(images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return module(images)

    return run


# ---------------------------------------------------------------- export + check


@dataclass
class ExportReport:
    """What was written and how well it agrees with the eager network."""

    format: str
    path: str
    bytes: int
    params: int              # the deployable network's parameters (lowrank count)
    stored: dict[str, Any]   # float_values, other_values, tensors, nodes (+ ops for onnx)
    dynamic_batch: bool
    check_inputs: str        # what the equality check ran on
    check_batch: int
    max_abs_diff: float
    max_abs_eager: float
    tolerance: float = TOLERANCE
    passed: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def relative_diff(self) -> float:
        """max |exported - eager| / max(1, max |eager|): the figure judged against the tolerance."""
        return self.max_abs_diff / max(1.0, self.max_abs_eager)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able, with the relative difference."""
        return {**asdict(self), "relative_diff": self.relative_diff}


def compare(runner: Callable[[torch.Tensor], torch.Tensor], model: nn.Module,
            images: torch.Tensor) -> tuple[float, float]:
    """(max |runner - eager|, max |eager|) over ``images``."""
    with torch.no_grad():
        eager = model(images).float().cpu()
    exported = runner(images).float().cpu()
    if exported.shape != eager.shape:
        raise UserError(f"the exported model returns shape {tuple(exported.shape)}, eager {tuple(eager.shape)}",
                        hint="a bug in the export: please report it with the preset")
    return float((exported - eager).abs().max()), float(eager.abs().max())


def export(model: nn.Module, fmt: str, path: Path, images: torch.Tensor, params: int,
           check_inputs: str = "random inputs") -> ExportReport:
    """Write ``model`` (eval mode, CPU) as ``fmt`` to ``path`` and check it on ``images``.

    The file is written under a temporary name beside ``path`` and renamed only once the check
    passes; a file whose outputs differ from eager's by more than :data:`TOLERANCE` is removed
    and the report says so (``passed`` False).
    """
    require_format(fmt)
    path = Path(path)
    model = prepared(model)
    example = images[: min(2, len(images))]
    program = trace(model, example, fmt)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=SUFFIX[fmt], dir=path.parent)
    os.fchmod(handle, file_mode())  # mkstemp makes 0600; a deployable file is for others to read
    os.close(handle)
    temporary = Path(temporary)
    try:
        if fmt == "onnx":
            write_onnx(model, program, example, temporary)
            stored = onnx_stored(temporary)
            runner = onnx_runner(onnx_session(temporary, threads=torch.get_num_threads()))
        else:
            write_pt2(program, temporary)
            stored = pt2_stored(program)
            runner = pt2_runner(temporary)
        dynamic = dynamic_batch(program)
        checked = images if dynamic else example  # a program traced at a fixed batch takes only that batch
        diff, scale = compare(runner, model, checked)
        report = ExportReport(format=fmt, path=str(path), bytes=temporary.stat().st_size, params=params,
                              stored=stored, dynamic_batch=dynamic, check_inputs=check_inputs,
                              check_batch=len(checked), max_abs_diff=diff, max_abs_eager=scale)
        report.passed = report.relative_diff <= TOLERANCE
        if not report.dynamic_batch:
            report.notes.append(f"the network's code fixes the batch size: the file takes batches of {len(example)}")
        if report.passed:
            os.replace(temporary, path)
        return report
    finally:
        temporary.unlink(missing_ok=True)


# ---------------------------------------------------------------- a run's export


INPUT_KINDS = ("data", "random")


def check_images(deployable: Any, kind: str, count: int) -> tuple[torch.Tensor, str]:
    """The batch the equality check runs on: the first ``count`` test images of the network's
    dataset (``data``), or seeded random inputs (``random``); and a phrase saying which."""
    if kind == "random":
        return deployable.example(count).cpu(), f"{count} random inputs"
    from ..data import build_datasets
    from ..errors import DataError

    config = deployable.config
    try:
        bundle = build_datasets(config.data)
    except DataError as error:
        raise UserError(f"the check needs the run's dataset: {error.detail}", key="--inputs",
                        hint="put the data where it says, or check on random inputs with --inputs random") from None
    count = min(count, len(bundle.test))
    images = torch.stack([bundle.test[index][0] for index in range(count)]).float()
    return images, f"the first {count} test images of {config.data.name}"


def default_path(run_dir: Path, fmt: str) -> Path:
    """Where ``lowrank export RUN`` writes without ``--out``: RUN_DIR/export/model.<format>."""
    return Path(run_dir) / "export" / f"model{SUFFIX[fmt]}"
