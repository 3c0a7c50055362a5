"""Search spaces: ``--space KEY=SPEC`` with SPEC one of

    log:LO:HI        a float drawn log-uniformly, 0 < LO < HI      (weight decay, learning rate)
    float:LO:HI      a float drawn uniformly, LO < HI
    int:LO:HI        an integer in [LO, HI], LO < HI               (widths, ranks)
    cat:A,B,C        one of the listed values (YAML-typed: 3 -> int, true -> bool, null -> None)

Each KEY is a config key path (``train.lr``); :func:`check_space` applies both ends of
every range to the preset through the ordinary config loader, so an unknown key or a
value the schema refuses is the loader's one-line error, before any study or run exists.
No optuna at import time.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Mapping, Sequence

import yaml

from lowrank import safe_yaml
from lowrank.errors import UserError
from lowrank.registry import Registry


@dataclasses.dataclass(frozen=True)
class Param:
    """One searched key: its kind and range (``low``/``high``) or its choices."""

    key: str
    kind: str
    low: float | int | None = None
    high: float | int | None = None
    choices: tuple[Any, ...] = ()

    @property
    def spec(self) -> str:
        if self.kind == "cat":
            return "cat:" + ",".join(yaml_value(choice) for choice in self.choices)
        return f"{self.kind}:{_exact(self.low)}:{_exact(self.high)}"

    def ends(self) -> list[Any]:
        """Values that bound the space (both ends, or every choice): validated up front."""
        return list(self.choices) if self.kind == "cat" else [self.low, self.high]

    def probes(self) -> list[Any]:
        """:meth:`ends`, and for a float range an inner point with a fraction: an integer key's
        schema takes both ends of ``float:1:5`` (1.0 and 5.0) but no draw in between."""
        if self.kind not in ("float", "log"):
            return self.ends()
        low, high = float(self.low), float(self.high)
        for share in (0.382, 0.618, 0.5):
            inner = math.exp(math.log(low) + share * math.log(high / low)) if self.kind == "log" \
                else low + share * (high - low)
            if not inner.is_integer():
                return [low, high, inner]
        return [low, high]

    def distribution(self):
        """The optuna distribution of this parameter."""
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        if self.kind == "cat":
            return CategoricalDistribution(list(self.choices))
        if self.kind == "int":
            return IntDistribution(int(self.low), int(self.high))
        return FloatDistribution(float(self.low), float(self.high), log=self.kind == "log")

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "spec": self.spec}


def _exact(value: float | int) -> str:
    """A bound as text that parses back to the same number (``:g`` kept 6 digits and wrote
    10000000 as ``1e+07``, which ``int`` refuses: the manifest's space must read back exactly)."""
    return str(value) if isinstance(value, int) else repr(float(value))


def _bounds(key: str, kind: str, text: str, cast: Callable[[str], Any]) -> tuple[Any, Any]:
    parts = text.split(":")
    if len(parts) != 2:
        raise UserError(f"{kind}:{text} is not {kind}:LO:HI", key=f"--space {key}", hint=f"e.g. {EXAMPLES[kind]}")
    try:
        low, high = cast(parts[0]), cast(parts[1])
    except ValueError:
        raise UserError(f"{kind}:{text}: LO and HI must be {'integers' if cast is int else 'numbers'}", key=f"--space {key}",
                        hint=f"e.g. {EXAMPLES[kind]}") from None
    if not (math.isfinite(low) and math.isfinite(high)) or not low < high:
        raise UserError(f"{kind}:{text}: needs LO < HI", key=f"--space {key}", hint=f"e.g. {EXAMPLES[kind]}")
    return low, high


def _log(key: str, text: str) -> Param:
    low, high = _bounds(key, "log", text, float)
    if low <= 0:
        raise UserError(f"log:{text}: a log range needs 0 < LO < HI (log of {low:g} is undefined)", key=f"--space {key}",
                        hint=f"e.g. {EXAMPLES['log']}, or float:{text} for a uniform range")
    return Param(key, "log", low, high)


def _float(key: str, text: str) -> Param:
    return Param(key, "float", *_bounds(key, "float", text, float))


def _int(key: str, text: str) -> Param:
    return Param(key, "int", *_bounds(key, "int", text, int))


def _cat(key: str, text: str) -> Param:
    choices = []
    for raw in text.split(","):
        if not raw.strip():
            raise UserError(f"cat:{text}: an empty choice", key=f"--space {key}", hint=f"e.g. {EXAMPLES['cat']}")
        try:
            choices.append(safe_yaml.load(raw.strip()))
        except safe_yaml.TooLarge as error:
            raise UserError(f"cat:{text}: a choice is refused: {error}", key=f"--space {key}",
                            hint=f"e.g. {EXAMPLES['cat']}") from None
        except yaml.YAMLError:
            choices.append(raw.strip())
    if len(set(map(repr, choices))) != len(choices) or len(choices) < 2:
        raise UserError(f"cat:{text}: needs two or more distinct choices", key=f"--space {key}", hint=f"e.g. {EXAMPLES['cat']}")
    bad = [choice for choice in choices if not (choice is None or isinstance(choice, (str, int, float, bool)))]
    if bad:
        raise UserError(f"cat:{text}: choice {bad[0]!r} is not a scalar", key=f"--space {key}", hint=f"e.g. {EXAMPLES['cat']}")
    return Param(key, "cat", choices=tuple(choices))


KINDS: Registry[Callable[[str, str], Param]] = Registry("space kind")
for _name, _parse in (("log", _log), ("float", _float), ("int", _int), ("cat", _cat)):
    KINDS.add(_name, _parse)
EXAMPLES = {"log": "log:1e-6:1e-2", "float": "float:0.01:0.2", "int": "int:2:8", "cat": "cat:riffle,random,none"}


def parse_param(text: str) -> Param:
    """``KEY=SPEC`` -> :class:`Param`; bad input is one UserError naming ``--space`` and the key."""
    key, sep, spec = text.partition("=")
    key, spec = key.strip(), spec.strip()
    if not sep or not key or any(not part for part in key.split(".")) or not spec:
        raise UserError(f"expected KEY=SPEC, got {text!r}", key="--space",
                        hint="e.g. --space train.lr=log:1e-3:0.3 --space model.kwargs.width=int:8:64")
    kind, sep, rest = spec.partition(":")
    if kind not in KINDS:
        raise UserError(f"unknown kind {kind!r} in {spec!r}", key=f"--space {key}",
                        hint="SPEC is one of " + ", ".join(EXAMPLES.values()))
    return KINDS.get(kind)(key, rest)


def parse_space(texts: Sequence[str]) -> list[Param]:
    """Every ``--space``; at least one, each key once."""
    if not texts:
        raise UserError("no --space given", key="--space", hint="e.g. --space train.lr=log:1e-3:0.3")
    params = [parse_param(text) for text in texts]
    keys = [param.key for param in params]
    dup = next((key for key in keys if keys.count(key) > 1), None)
    if dup:
        raise UserError(f"{dup} is searched twice", key="--space", hint="give each key one SPEC")
    return params


def space_from_dicts(items: Sequence[Mapping[str, Any]]) -> list[Param]:
    """The space a study manifest recorded (``[{"key", "spec"}]``)."""
    return [parse_param(f"{item['key']}={item['spec']}") for item in items]


def yaml_value(value: Any) -> str:
    """``value`` as a ``--set`` value that YAML reads back as the same thing.

    A float is written with a decimal point (PyYAML reads ``1e-05`` as a *string*:
    its float pattern needs the dot), so ``1e-05`` becomes ``1.0e-05``.
    """
    if isinstance(value, float) and not isinstance(value, bool):
        text = repr(value)
        if "e" in text and "." not in text.split("e")[0]:
            mantissa, exponent = text.split("e")
            text = f"{mantissa}.0e{exponent}"
        return text
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def overrides_for(params: Mapping[str, Any]) -> list[str]:
    """``--set`` overrides that give a config the trial's parameter values."""
    return [f"{key}={yaml_value(value)}" for key, value in params.items()]


def check_space(space: Sequence[Param], validate: Callable[[list[str]], Any]) -> None:
    """Validate every end of every range through ``validate(overrides)`` (the config loader).

    Each value is tried alone on top of the others' low ends, so the error names the key
    that the schema refuses (unknown key, wrong type, out of the schema's range); a float
    range is also tried at an inner point (:meth:`Param.probes`), so ``float:`` on an integer
    key is refused here rather than failing every trial.
    """
    lows = {param.key: param.ends()[0] for param in space}
    for param in space:
        for value in param.probes():
            validate(overrides_for({**lows, param.key: value}))
