"""What the registries declare, readable without importing torch: names, kwargs, method declarations.

Config validation and ``lowrank methods`` need only the registries' declarations (model
and dataset names with their keyword arguments, each method's hyperparameter range,
options and description), but the registries are filled by importing the model and method
modules, and with them torch (seconds). :func:`catalogue` answers from the live registries
when they are already imported in this process (the worker, tests, anything that
registered an entry at run time), and otherwise from a JSON cache of them, keyed by the
size and mtime of every file of the ``lowrank`` package: an edited or added module makes
a new key, so the cache is rebuilt (once, with torch) and never goes stale. If the cache
cannot be written (read-only home), the live registries are used every time.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

FORMAT = 1  # bump when the cached structure changes
PACKAGE = Path(__file__).resolve().parent
REGISTRY_MODULES = ("lowrank.models", "lowrank.data", "lowrank.methods")


@dataclass(frozen=True)
class HpInfo:
    """A method's hyperparameter as declared (see :class:`lowrank.methods.registry.HyperParam`)."""

    name: str
    kind: str  # "int" or "float"
    low: float
    high: float
    example: float  # the declaration's typical value (what `lowrank bench layers` measures at)
    direction: int
    description: str

    def validate(self, value: float) -> float:
        """As ``HyperParam.validate``: the value cast to the declared type, or ValueError naming the range."""
        cast = {"int": int, "float": float}[self.kind](value)
        if not (self.low <= cast <= self.high):
            raise ValueError(f"{self.name}={value} is outside [{self.low}, {self.high}]")
        return cast


@dataclass(frozen=True)
class MethodInfo:
    """One substitute method's declaration, without its builder and counting functions."""

    name: str
    description: str
    hp: HpInfo | None
    options: dict[str, Any] = field(default_factory=dict)
    paper: str = ""


@dataclass(frozen=True)
class Catalogue:
    """Models and datasets (name -> keyword argument -> ``inspect.Parameter`` kind name) and methods."""

    models: dict[str, dict[str, str]]
    datasets: dict[str, dict[str, str]]
    methods: dict[str, MethodInfo]

    def method(self, name: str) -> MethodInfo:
        """A method by name; an unknown name raises KeyError listing the known ones (as the registry)."""
        try:
            return self.methods[name]
        except KeyError:
            raise KeyError(f"unknown substitute method {name!r}; known methods: {', '.join(sorted(self.methods))}") \
                from None

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict (the cache file's content)."""
        return {"models": self.models, "datasets": self.datasets,
                "methods": {name: asdict(info) for name, info in self.methods.items()}}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Catalogue":
        """The inverse of :meth:`to_json`."""
        methods = {name: MethodInfo(**{**info, "hp": HpInfo(**info["hp"]) if info["hp"] else None})
                   for name, info in data["methods"].items()}
        return cls(models=data["models"], datasets=data["datasets"], methods=methods)


def live() -> Catalogue:
    """Read the registries themselves (imports every model, dataset and method module, so torch)."""
    from .data import dataset_kwargs, list_datasets
    from .methods import list_methods
    from .models import list_models, model_kwargs

    def kinds(params: dict) -> dict[str, str]:
        return {name: param.kind.name for name, param in params.items()}

    methods = {}
    for method in list_methods():
        hp = method.hp
        methods[method.name] = MethodInfo(
            name=method.name, description=method.description, options=dict(method.options), paper=method.paper,
            hp=None if hp is None else HpInfo(name=hp.name, kind=hp.kind.__name__, low=hp.low, high=hp.high,
                                              example=hp.default, direction=hp.direction,
                                              description=hp.description))
    return Catalogue(models={name: kinds(model_kwargs(name)) for name in list_models()},
                     datasets={name: kinds(dataset_kwargs(name)) for name in list_datasets()},
                     methods=methods)


def cache_key() -> str:
    """A digest of every file of the package (relative path, size, mtime) and the Python version."""
    digest = hashlib.sha1(f"{FORMAT} {sys.version_info[:2]}".encode())
    for root, dirs, files in os.walk(PACKAGE):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in sorted(files):
            if name.endswith(".py"):
                stat = os.stat(os.path.join(root, name))
                digest.update(f"{os.path.relpath(os.path.join(root, name), PACKAGE)} {stat.st_size} "
                              f"{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/lowrank`` (default ``~/.cache/lowrank``)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "lowrank"


def catalogue() -> Catalogue:
    """The registries' declarations: live when already imported, else from the cache (built once)."""
    if all(name in sys.modules for name in REGISTRY_MODULES):
        return live()
    path = cache_dir() / f"catalogue-{cache_key()}.json"
    try:
        return Catalogue.from_json(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError, TypeError):
        pass  # absent, torn or from an older format: rebuild
    found = live()
    try:
        text = json.dumps(found.to_json())
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".catalogue-", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)  # atomic: a concurrent reader sees the old file or the whole new one
    except (OSError, TypeError, ValueError):
        pass  # an unwritable cache only costs speed
    return found
