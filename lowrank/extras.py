"""The optional extras (``pip install 'lowrank[extra]'``), and the one check every feature that needs
one makes before anything is created.

A feature that needs an extra asks :func:`require` (``key``: the config key or flag that asked for it)
from the command's up-front checks (``console.precheck`` for ``run``, ``run --detach``, ``compare``,
``tune`` and the console's launch dialog; the command itself for ``compare show --png``, ``export``,
``bench model --mode onnx``), so a base install refuses in one line naming the key, the missing
packages and the install line, exit 2, and nothing exists yet. :func:`config_needs` lists what a
config asks for. Torch-free, and nothing is imported to find out: ``importlib.util.find_spec`` only.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Any

from .errors import UserError


@dataclass(frozen=True)
class Extra:
    """One pip extra: the modules it provides and what they are for."""

    name: str
    modules: tuple[str, ...]
    purpose: str

    @property
    def install(self) -> str:
        """The line that installs it."""
        return f"pip install 'lowrank[{self.name}]'"


EXTRAS = {extra.name: extra for extra in (
    Extra("tensorboard", ("tensorboard",), "TensorBoard event files (log.tensorboard, lowrank export tensorboard)"),
    Extra("plot", ("matplotlib",), "PNG plots (lowrank compare show --png)"),
    Extra("export", ("onnx", "onnxruntime", "onnxscript", "onnx_ir"), "ONNX export and ONNX Runtime timing"),
    Extra("postgresql", ("psycopg2",), "a PostgreSQL Optuna storage (lowrank tune --storage postgresql://...)"),
)}


def installed(module: str) -> bool:
    """Whether ``module`` can be imported here (found, not imported)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent package missing, or a broken module entry
        return False


def missing(name: str) -> list[str]:
    """The modules of extra ``name`` that are not installed (empty: ready)."""
    return [module for module in EXTRAS[name].modules if not installed(module)]


def require(name: str, key: str, what: str | None = None) -> None:
    """Raise one UserError naming ``key``, the missing packages and the install line, unless extra
    ``name`` is installed."""
    absent = missing(name)
    if absent:
        extra = EXTRAS[name]
        verb = "is" if len(absent) == 1 else "are"
        raise UserError(f"{what or extra.purpose} needs {', '.join(absent)}, which {verb} not installed", key=key,
                        hint=extra.install)


def config_needs(config: Any) -> list[tuple[str, str]]:
    """(key, extra) for every optional feature a validated experiment config turns on."""
    needs = []
    if config.log.tensorboard:
        needs.append(("log.tensorboard", "tensorboard"))
    return needs


def check_config(config: Any) -> None:
    """:func:`require` every extra ``config`` needs (the first missing one raises)."""
    for key, name in config_needs(config):
        require(name, key, f"{key}: true")


# SQLAlchemy dialect -> (its default DBAPI module, the extra or package that provides it)
_DRIVERS = {"postgresql": ("psycopg2", "postgresql"), "mysql": ("MySQLdb", "mysqlclient"),
            "mariadb": ("mariadb", "mariadb"), "oracle": ("oracledb", "oracledb"), "mssql": ("pyodbc", "pyodbc")}
_NAMED_DRIVERS = {"psycopg2": "psycopg2-binary", "psycopg": "psycopg[binary]", "pg8000": "pg8000",
                  "asyncpg": "asyncpg", "pymysql": "pymysql", "mysqldb": "mysqlclient", "mysqlconnector":
                  "mysql-connector-python", "oracledb": "oracledb", "pyodbc": "pyodbc", "pymssql": "pymssql"}


def check_storage_url(url: str, key: str = "--storage") -> None:
    """An Optuna RDB storage URL's database driver is installed (``sqlite`` needs none, journal files
    none): one UserError naming the driver and its install line otherwise."""
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if not scheme or scheme.startswith("sqlite") or scheme.startswith("journal"):
        return
    dialect, _, driver = scheme.partition("+")
    if driver:
        module = "MySQLdb" if driver == "mysqldb" else driver
        package = _NAMED_DRIVERS.get(driver, driver)
        if not installed(module):
            raise UserError(f"a {dialect}+{driver} storage needs the {driver} driver, which is not installed", key=key,
                            hint=f"pip install {package}")
        return
    if dialect not in _DRIVERS:
        return  # a dialect we do not know: optuna's own error says what is missing
    module, source = _DRIVERS[dialect]
    if not installed(module):
        hint = EXTRAS[source].install if source in EXTRAS else f"pip install {source}"
        raise UserError(f"a {dialect} storage needs the {module} driver, which is not installed", key=key, hint=hint)
