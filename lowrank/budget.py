"""Choose a method's hyperparameter so the substituted network meets a parameter budget.

Research notes 000 (21st Nov 2018) set the budget with ``scipy.optimize.minimize_scalar``
on a parameter count; here the search is on EXACT counts instead. The network's count at
``hp`` is

    total(hp) = params of everything not substituted + sum over planned convs of method.params(spec, hp)

over the deployable network (the model's training-only modules, e.g. an auxiliary head, are
outside both terms and outside the dense count a budget fraction refers to), which is analytic (no model is rebuilt per step) and a monotone step function of ``hp`` in
the method's declared direction. Integer hps are bisected directly; float hps are bisected
to the step edge next to the target, then the nearer of the two bracketing counts wins and
the returned hp is a short decimal inside that step (not on its edge). The result is checked
once by substituting a meta-device copy of the network and counting its parameters.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
import torch.nn as nn

from .count import count_model, deployable_param_ids, in_modules, meta_copy, split_params, training_only_modules
from .errors import BudgetError, ConfigError
from .meta import ShapesOnly
from .methods import get_method
from .methods.registry import ConvSpec, Method
from .substitute import DEFAULT_SKIP, plan_substitution, substitute

_FLOAT_STEPS = 64  # bisection halvings of the float range: edges located to 2^-64 of it


@dataclass
class BudgetResult:
    """What the solver chose and how close it came."""

    method: str
    hp: float | int | None
    target: int
    achieved: int
    dense_params: int  # of the deployable network (training-only modules excluded)
    reachable: tuple[int, int]  # (min, max) network params over the method's hp range
    layers: int  # number of substituted convolutions
    macs: int | None = None  # per-image mult-adds of the achieved network (when input_shape was given)

    @property
    def gap(self) -> float:
        """(achieved - target) / target."""
        return (self.achieved - self.target) / self.target

    @property
    def fraction(self) -> float:
        """achieved / dense params."""
        return self.achieved / self.dense_params


class NetworkCount:
    """total(hp) for one network, method and options, computed from the plan alone.

    Counts are of the deployable network: the model's training-only modules (an auxiliary head,
    :func:`lowrank.count.training_only_modules`) are outside ``dense``, ``kept`` and the planned
    convs' sum, whether or not their convs are substituted.
    """

    def __init__(self, model: nn.Module, method: Method, options: dict, skip: Sequence[str]) -> None:
        self.method, self.options = method, options
        plan = plan_substitution(model, skip)
        only = training_only_modules(model)
        planned = {name for name, _ in plan}
        deployable = deployable_param_ids(model)
        replaced_ids = {id(p) for name, m in model.named_modules() if name in planned for p in m.parameters()}
        self.kept = sum(p.numel() for p in model.parameters() if id(p) in deployable and id(p) not in replaced_ids)
        self.dense = split_params(model)[0]
        deployed_plan = [spec for name, spec in plan if not in_modules(name, only)]
        self.specs: Counter[ConvSpec] = Counter(deployed_plan)  # identical convs counted once
        self.layers = len(plan)

    def __call__(self, hp: Any) -> int:
        return self.kept + sum(n * int(self.method.params(spec, hp, **self.options)) for spec, n in self.specs.items())


def _target(dense: int, target_params: int | None, target_fraction: float | None) -> int:
    if (target_params is None) == (target_fraction is None):
        raise ConfigError("give exactly one of a parameter count and a fraction of the dense network",
                          key="substitute.budget")
    if target_params is not None:
        if int(target_params) != target_params or target_params <= 1:
            raise ConfigError(f"budget_params={target_params!r} must be an integer > 1", key="substitute.budget_params")
        return int(target_params)
    if not 0 < target_fraction <= 1:
        raise ConfigError(f"budget={target_fraction!r} must be a fraction in (0, 1] of the dense parameters",
                          key="substitute.budget")
    return max(1, round(target_fraction * dense))


def _short_inside(lo: float, hi: float, inside: Callable[[float], bool]) -> float:
    """A short decimal in [lo, hi] for which ``inside`` holds (the midpoint if none is shorter)."""
    mid = (lo + hi) / 2
    for digits in range(1, 17):
        value = float(f"{mid:.{digits}g}")
        if lo <= value <= hi and inside(value):
            return value
    return mid


def _solve(total: NetworkCount, method: Method, target: int) -> tuple[Any, int]:
    """The hp whose total is nearest ``target`` (ties: the smaller count); total is monotone in t."""
    hp = method.hp
    if hp.kind is int:
        lo, hi = math.ceil(hp.low), math.floor(hp.high)
        at = (lambda t: lo + t) if hp.direction > 0 else (lambda t: hi - t)
        a, b = 0, hi - lo  # find the first t with total >= target
        while a < b:
            m = (a + b) // 2
            a, b = (m + 1, b) if total(at(m)) < target else (a, m)
        candidates = [at(t) for t in {max(a - 1, 0), a}]
        best = min(candidates, key=lambda h: (abs(total(h) - target), total(h)))
        return best, total(best)

    span = hp.high - hp.low

    def at(t: float) -> float:  # position t in [0, 1] along the direction of more parameters
        value = hp.low + t * span if hp.direction > 0 else hp.high - t * span
        return min(hp.high, max(hp.low, value))

    a, b = 0.0, 1.0  # invariant once bracketed: total(at(a)) < target <= total(at(b))
    if total(at(a)) >= target:
        b = 0.0
    else:
        for _ in range(_FLOAT_STEPS):
            m = (a + b) / 2
            if m in (a, b):
                break
            if total(at(m)) < target:
                a = m
            else:
                b = m
    below, above = total(at(a)), total(at(b))
    t_edge, value = (a, below) if abs(below - target) <= abs(above - target) else (b, above)  # tie: smaller
    # the step holding `value` is an interval of t; find its other edge to pick a point inside it
    inner, outer = (t_edge, 0.0) if t_edge == a else (t_edge, 1.0)
    far = outer if total(at(outer)) == value else None
    if far is None:
        x, y = inner, outer  # total(at(x)) == value != total(at(y))
        for _ in range(_FLOAT_STEPS):
            m = (x + y) / 2
            if m in (x, y):
                break
            x, y = (m, y) if total(at(m)) == value else (x, m)
        far = x
    lo_hp, hi_hp = sorted((at(inner), at(far)))
    chosen = _short_inside(lo_hp, hi_hp, lambda h: total(h) == value)
    return chosen, total(chosen)


def solve_budget(model: nn.Module | Callable[[], nn.Module], method: str, *, target_params: int | None = None,
                 target_fraction: float | None = None, options: dict | None = None,
                 skip: Sequence[str] = DEFAULT_SKIP, input_shape: tuple[int, int, int] | None = None,
                 check: bool = True) -> BudgetResult:
    """Solve ``method``'s hp so the substituted network has about the target parameter count.

    ``model`` is a dense network (any device; it is not modified) or a zero-argument factory
    (called on the meta device). Give exactly one of ``target_params`` (absolute count) and
    ``target_fraction`` (of the dense network's parameters). Raises BudgetError when the
    target is outside what the method can reach; ``input_shape`` (C, H, W) adds mult-adds.
    ``check=False`` leaves the check of the analytic count against a real substitution to the
    caller, which substitutes the network anyway (:func:`lowrank.build.build_network`:
    :func:`check_achieved` on its own count, one substitution instead of two).
    """
    declaration = get_method(method)
    options = dict(options or {})
    if not isinstance(model, nn.Module):
        with torch.device("meta"), ShapesOnly():
            model = model()
    model = model if _on_meta(model) else meta_copy(model)
    total = NetworkCount(model, declaration, options, skip)
    target = _target(total.dense, target_params, target_fraction)

    if declaration.hp is None:
        hp, achieved = None, total(None)
        reachable = (achieved, achieved)
    else:
        ends = (total(declaration.hp.kind(declaration.hp.low)), total(declaration.hp.kind(declaration.hp.high)))
        reachable = (min(ends), max(ends))
        if declaration.hp.direction * (ends[1] - ends[0]) < 0:
            raise RuntimeError(f"method {method!r}: parameter count is not monotone in the declared direction")
        if not reachable[0] <= target <= reachable[1]:
            lo, hi = reachable
            raise BudgetError(
                f"method {method!r} cannot reach {target:,} parameters ({target / total.dense:.3g} of dense "
                f"{total.dense:,}): it reaches {lo:,} to {hi:,} parameters "
                f"({lo / total.dense:.3g} to {hi / total.dense:.3g} of dense) over "
                f"{declaration.hp.name} in [{declaration.hp.low}, {declaration.hp.high}]",
                key="substitute.budget", hint="choose a budget inside that range or another method")
        hp, achieved = _solve(total, declaration, target)

    macs = None
    if check:  # the analytic count against a real substitution (on meta: shapes only)
        built = meta_copy(model)
        with ShapesOnly():
            substitute(built, method, hp, options=options, skip=skip)
        counted = count_model(built, input_shape)
        check_achieved(method, hp, achieved, counted.params)
        macs = counted.macs if input_shape else None
    return BudgetResult(method=method, hp=hp, target=target, achieved=achieved, dense_params=total.dense,
                        reachable=reachable, layers=total.layers, macs=macs)


def check_achieved(method: str, hp: Any, achieved: int, counted: int) -> None:
    """The solver's analytic count must be what the substituted layers really hold."""
    if counted != achieved:
        raise RuntimeError(f"method {method!r} declares {achieved:,} parameters at {hp!r} but its layers "
                           f"hold {counted:,}: its params() disagrees with build()")


def _on_meta(model: nn.Module) -> bool:
    return any(t.device.type == "meta" for t in model.parameters())
