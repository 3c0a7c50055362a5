"""How well each structured layer approximates a random dense matrix, against its parameters.

The research notes' study (001, 5-6 Nov 2018): fit a layer to random N x N target matrices and
report the final error's mean and standard deviation over seeds against the parameter count
("ACDC_1 with 64 parameters: 0.0399 +/- 0.0059" at N = 32).

Protocol (the notes' settings where they state them, documented choices where they do not):
- N = 32; ACDC with 1, 2, 4, ..., 32 layers; every other method on the grid of matching
  parameter counts (:func:`lowrank.studies.layers.default_variants`); Adam (notes: 7 Oct 2018,
  "final loss after 1000 iterations"), 1000 steps.
- Target: entries i.i.d. N(0, 1/N) (``normal``; Glorot's variance 2/(in+out) for a square
  matrix) or U(-sqrt(3/N), sqrt(3/N)) (``uniform``, the same variance); the notes do not say.
- Loss and reported error: the mean squared difference over the N^2 entries of the effective
  matrix W (identity pushed through the layer) and the target T, ``mean((W - T)^2)``; the
  relative error ``sum((W-T)^2) / sum(T^2)`` is reported beside it. Learning rate 1e-2.
- 3 seeds (the notes do not say how many; ``--seeds 5`` for tighter spreads); seed s draws the target and the layer's initialisation from ``torch.manual_seed(s)``.

Seeds are fitted together: the per-seed layers are stacked with :func:`torch.func.stack_module_state`
and the loss is vmapped, so each step is one batched forward/backward. Adam and SGD act
elementwise, so the sum of the per-seed losses gives every seed exactly its own update;
L-BFGS (a line search over the whole vector) fits each seed on its own.

Stacked diagonal-transform layers (acdc, block_acdc, afdf) expose ``stack_matrix``: the same
effective matrix as one batched product of the L layer matrices, a few kernels whatever L
instead of about a dozen per layer. Their fit runs on it (the seeds as a leading batch
dimension, no vmap): the study checks at the start that it equals the layer's own forward on
the identity for every seed's layer, and it reports the error of the layer's own forward at the
fitted parameters (falling back to the generic fit, with a warning, if the two disagree).
"""

from __future__ import annotations

import copy
import math
import os
import sys
import warnings
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Callable

import torch

from .layers import Variant, effective_matrix

TARGETS = ("normal", "uniform")
OPTIMIZERS = ("adam", "sgd", "lbfgs")


@dataclass(frozen=True)
class ApproxSettings:
    """The protocol of one approximation study (see the module docstring for the defaults' sources)."""

    n: int = 32
    target: str = "normal"
    optimizer: str = "adam"
    steps: int = 1000
    lr: float = 1e-2
    seeds: int = 3

    def __post_init__(self) -> None:
        if self.target not in TARGETS:
            raise ValueError(f"target must be one of {', '.join(TARGETS)}, got {self.target!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        for name, low in (("n", 2), ("steps", 1), ("seeds", 1)):
            if int(getattr(self, name)) < low:
                raise ValueError(f"{name} must be >= {low}, got {getattr(self, name)}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be a positive number, got {self.lr}")


def target_matrix(settings: ApproxSettings, generator: torch.Generator) -> torch.Tensor:
    """One random N x N target with entry variance 1/N."""
    n = settings.n
    if settings.target == "normal":
        return torch.randn(n, n, generator=generator) / math.sqrt(n)
    bound = math.sqrt(3.0 / n)
    return (torch.rand(n, n, generator=generator) * 2 - 1) * bound


def _seeded(variant: Variant, settings: ApproxSettings, seed: int) -> tuple[torch.nn.Module, torch.Tensor]:
    """The layer's initialisation and the target for ``seed`` (the same pair whatever else runs)."""
    generator = torch.Generator().manual_seed(seed)
    target = target_matrix(settings, generator)
    torch.manual_seed(seed)
    module = variant.build(settings.n)
    module.train()
    return module, target


def _optimizer(settings: ApproxSettings, params: list[torch.Tensor]) -> torch.optim.Optimizer:
    if settings.optimizer == "adam":
        return torch.optim.Adam(params, lr=settings.lr)
    if settings.optimizer == "sgd":
        return torch.optim.SGD(params, lr=settings.lr, momentum=0.9)
    return torch.optim.LBFGS(params, lr=settings.lr, max_iter=1, history_size=50, line_search_fn="strong_wolfe")


def _fit_one(module: torch.nn.Module, target: torch.Tensor, settings: ApproxSettings) -> torch.Tensor:
    """Fit one layer; the final effective matrix."""
    params = [p for p in module.parameters() if p.requires_grad]
    optimizer = _optimizer(settings, params)

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = ((effective_matrix(module, settings.n) - target) ** 2).mean()
        loss.backward()
        return loss

    for _ in range(settings.steps):
        optimizer.step(closure)
    with torch.no_grad():
        return effective_matrix(module, settings.n)


def _fit_batched(modules: list[torch.nn.Module], targets: torch.Tensor, settings: ApproxSettings) -> torch.Tensor:
    """Fit all seeds at once (vmapped); the final effective matrices, (seeds, N, N)."""
    from torch.func import functional_call, stack_module_state, vmap

    params, buffers = stack_module_state(modules)
    base = copy.deepcopy(modules[0]).to("meta")

    def matrix(p, b):
        return effective_matrix(lambda x: functional_call(base, (p, b), (x,)), settings.n)

    batched = vmap(matrix, randomness="error")
    optimizer = _optimizer(settings, list(params.values()))
    for _ in range(settings.steps):
        optimizer.zero_grad()
        loss = ((batched(params, buffers) - targets) ** 2).mean(dim=(1, 2)).sum()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        return batched(params, buffers)


def _stacked_cores(modules: list[torch.nn.Module], n: int) -> list[torch.nn.Module] | None:
    """Each module's structured core whose ``stack_matrix(a=, d=)`` is the module's whole effective
    matrix (its only parameters are the core's diagonals ``a`` and ``d``, the seeds' buffers agree
    and the product equals the forward on the identity now), or None."""
    cores = []
    for module in modules:
        core = next((m for m in module.modules() if hasattr(m, "stack_matrix")), None)
        if core is None or {name for name, _ in core.named_parameters()} != {"a", "d"}:
            return None
        if {id(p) for p in module.parameters()} != {id(p) for p in core.parameters()}:
            return None  # a depthwise stage or bias outside the product
        with torch.no_grad():
            if not torch.allclose(core.stack_matrix(), effective_matrix(module, n), rtol=1e-4, atol=1e-6):
                return None
        cores.append(core)
    first = dict(cores[0].named_buffers())
    for core in cores[1:]:
        other = dict(core.named_buffers())
        if other.keys() != first.keys() or any(not torch.equal(other[k], first[k]) for k in first):
            return None
    return cores


def _fit_stacked(modules: list[torch.nn.Module], cores: list[torch.nn.Module], targets: torch.Tensor,
                 settings: ApproxSettings) -> tuple[torch.Tensor, torch.Tensor]:
    """Fit all seeds at once through ``stack_matrix`` (seeds as a batch dimension); the final
    effective matrices by the layers' own forward at the fitted parameters, and by the product."""
    params = {name: torch.stack([getattr(core, name).detach() for core in cores]).requires_grad_()
              for name in ("a", "d")}
    matrix = cores[0].stack_matrix
    optimizer = _optimizer(settings, list(params.values()))
    for _ in range(settings.steps):
        optimizer.zero_grad()
        loss = ((matrix(**params) - targets) ** 2).mean(dim=(1, 2)).sum()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        for seed, core in enumerate(cores):
            for name, value in params.items():
                getattr(core, name).copy_(value[seed])
        own = torch.stack([effective_matrix(module, settings.n) for module in modules])
        return own, matrix(**params)


def _fit_by_product(variant: Variant, modules: list[torch.nn.Module], targets: torch.Tensor,
                    settings: ApproxSettings) -> torch.Tensor | None:
    """The fitted effective matrices by :func:`_fit_stacked` for a stacked layer (Adam/SGD), or None
    when the variant is not one, or (with a warning, the modules back at their initialisation) when
    the product and the forward disagree after the fit."""
    cores = _stacked_cores(modules, settings.n) if settings.optimizer != "lbfgs" else None
    if cores is None:
        return None
    start = [{name: p.detach().clone() for name, p in core.named_parameters()} for core in cores]
    finals, product = _fit_stacked(modules, cores, targets, settings)
    if torch.allclose(finals, product, rtol=1e-3, atol=1e-5):
        return finals
    with torch.no_grad():  # back to the initialisation for the fit through the forward
        for core, values in zip(cores, start):
            for name, p in core.named_parameters():
                p.copy_(values[name])
    warnings.warn(f"{variant.label}: stack_matrix and the layer's forward disagree after the fit; "
                  f"refitting through the forward", RuntimeWarning, stacklevel=3)
    return None


def fit_variant(variant: Variant, settings: ApproxSettings) -> dict:
    """Fit ``variant`` for every seed; a row: label, params, mean/std of the final error, per-seed errors."""
    with one_thread():
        return _fit_variant(variant, settings)


@contextmanager
def one_thread():
    """Run on one intra-op thread: these tensors are tiny, and on a busy machine a second OpenMP
    thread waiting for a core made a fit 40x slower (measured on the 2-core box)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _fit_variant(variant: Variant, settings: ApproxSettings) -> dict:
    pairs = [_seeded(variant, settings, seed) for seed in range(settings.seeds)]
    modules, targets = [m for m, _ in pairs], torch.stack([t for _, t in pairs])
    trainable = [p for p in modules[0].parameters() if p.requires_grad]
    if not trainable:  # nothing to fit (a method with no parameters at this size)
        finals = torch.stack([effective_matrix(m, settings.n).detach() for m in modules])
    else:
        finals = _fit_by_product(variant, modules, targets, settings)
        if finals is None and settings.optimizer != "lbfgs" and len(modules) > 1:
            try:
                finals = _fit_batched(modules, targets, settings)
            except (RuntimeError, NotImplementedError):  # an op without a vmap rule: fit seed by seed
                pairs = [_seeded(variant, settings, seed) for seed in range(settings.seeds)]
                finals = torch.stack([_fit_one(m, t, settings) for m, t in pairs])
        elif finals is None:
            finals = torch.stack([_fit_one(m, t, settings) for m, t in pairs])
    squared = (finals - targets) ** 2
    errors = squared.mean(dim=(1, 2))
    relative = squared.sum(dim=(1, 2)) / (targets ** 2).sum(dim=(1, 2))
    finite = bool(torch.isfinite(errors).all())
    return {
        "series": variant.series, "label": variant.label, "method": variant.method, "hp": variant.hp,
        "options": dict(variant.options), "params": variant.params(settings.n),
        "mean": float(errors.mean()), "std": float(errors.std()) if len(errors) > 1 else 0.0,
        "relative_mean": float(relative.mean()),
        "errors": [float(e) for e in errors], "note": "" if finite else "diverged (non-finite error)",
    }


def _safe_fit(variant: Variant, settings: ApproxSettings) -> dict:
    """:func:`fit_variant`, or a row with a note for a variant the method cannot build at this N."""
    try:
        return fit_variant(variant, settings)
    except ValueError as error:
        return {"series": variant.series, "label": variant.label, "method": variant.method,
                "hp": variant.hp, "options": dict(variant.options), "params": None,
                "mean": None, "std": None, "relative_mean": None, "errors": [],
                "note": f"not built: {error}"}


def _die_with_parent() -> None:
    """Pool initializer: a worker gets SIGKILL when the study process dies (Linux
    prctl(PR_SET_PDEATHSIG)), so a killed ``lowrank study`` leaves no fitting process behind."""
    torch.set_num_threads(1)
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG = 1
        if os.getppid() == 1:  # the parent died before prctl took effect
            os._exit(1)


def _signature(variant: Variant, n: int) -> tuple | None:
    """What makes two variants the same layer at N x N: class, parameter shapes and the effective
    matrix at the same seed (``separable`` is ``dense`` on a 1x1, ``sep_hashed`` is ``hashed``)."""
    try:
        torch.manual_seed(0)
        module = variant.build(n)
        with torch.no_grad():
            matrix = effective_matrix(module, n)
    except ValueError:
        return None
    shapes = tuple(tuple(p.shape) for p in module.parameters())
    return (shapes, tuple(round(float(v), 6) for v in matrix.flatten()))


def run_study(variants: list[Variant], settings: ApproxSettings,
              progress: Callable[[Variant], None] | None = None, jobs: int = 1) -> list[dict]:
    """Fit every variant, ``jobs`` processes at a time; duplicates are fitted once.

    A variant that builds the same layer as an earlier one (same parameter shapes and effective
    matrix at the same seed) is reported with the earlier one's figures and a note saying so.
    """
    with one_thread():
        return _run_study(variants, settings, progress, jobs)


def _run_study(variants: list[Variant], settings: ApproxSettings, progress: Callable[[Variant], None] | None,
               jobs: int) -> list[dict]:
    first: dict[tuple, int] = {}
    same_as: dict[int, int] = {}
    for index, variant in enumerate(variants):
        signature = _signature(variant, settings.n)
        if signature is not None and signature in first:
            same_as[index] = first[signature]
        elif signature is not None:
            first[signature] = index
    todo = [i for i in range(len(variants)) if i not in same_as]
    results: dict[int, dict] = {}
    if jobs <= 1 or len(todo) <= 1:
        for i in todo:
            results[i] = _safe_fit(variants[i], settings)
            if progress is not None:
                progress(variants[i])
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        # the costliest first, so the two workers finish together
        order = sorted(todo, key=lambda i: -(variants[i].params(settings.n) or 0))
        with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn"),
                                 initializer=_die_with_parent) as pool:
            futures = {pool.submit(_safe_fit, variants[i], settings): i for i in order}
            for future in as_completed(futures):
                results[futures[future]] = future.result()
                if progress is not None:
                    progress(variants[futures[future]])
    rows = []
    for index, variant in enumerate(variants):
        if index in same_as:
            source = results[same_as[index]]
            row = {**source, "series": variant.series, "label": variant.label, "method": variant.method,
                   "hp": variant.hp, "options": dict(variant.options),
                   "note": f"same layer as {source['label']} at {settings.n}x{settings.n} (fitted once)"}
            if progress is not None:
                progress(variant)
        else:
            row = results[index]
        rows.append(row)
    return rows


def settings_dict(settings: ApproxSettings) -> dict:
    """The protocol as a plain dict (for --json)."""
    return asdict(settings)
