"""lowrank.extras: which optional extras are installed, and the one-line refusal of a feature that needs
a missing one (the CLI cases are in tests/console/test_extras_refused.py)."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from lowrank import extras
from lowrank.config import load
from lowrank.errors import UserError

REPO = Path(__file__).resolve().parents[2]
QUICK = REPO / "presets" / "quickstart.yaml"


def test_every_extra_is_a_pyproject_extra_and_each_module_is_its_import_name():
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    for name, extra in extras.EXTRAS.items():
        assert name in declared, f"extras.EXTRAS names {name!r}, which pyproject.toml does not declare"
        assert extra.install == f"pip install 'lowrank[{name}]'"
        assert extra.modules and all("-" not in module for module in extra.modules)  # import names, not dists


def test_installed_finds_without_importing():
    assert extras.installed("json") and not extras.installed("no_such_module_anywhere")
    assert not extras.installed("no_such_parent.child")  # a missing parent package is not an error


def test_require_names_the_key_the_missing_modules_and_the_install_line(monkeypatch):
    monkeypatch.setattr(extras, "installed", lambda module: module not in ("onnx", "onnx_ir"))
    assert extras.missing("export") == ["onnx", "onnx_ir"]
    with pytest.raises(UserError) as refused:
        extras.require("export", "--mode onnx", "onnx timing")
    error = refused.value
    assert error.key == "--mode onnx" and error.hint == "pip install 'lowrank[export]'"
    assert "onnx timing needs onnx, onnx_ir, which are not installed" in error.detail
    monkeypatch.setattr(extras, "installed", lambda module: True)
    extras.require("export", "--mode onnx")  # all there: no error


def test_config_needs_lists_the_features_a_config_turns_on(monkeypatch):
    assert extras.config_needs(load(QUICK)) == []
    config = load(QUICK, ["log.tensorboard=true"])
    assert extras.config_needs(config) == [("log.tensorboard", "tensorboard")]
    monkeypatch.setattr(extras, "installed", lambda module: module != "tensorboard")
    with pytest.raises(UserError) as refused:
        extras.check_config(config)
    assert refused.value.key == "log.tensorboard" and "tensorboard" in refused.value.hint


@pytest.mark.parametrize("url, refused_module, hint", [
    ("sqlite:///study.db", None, None),
    ("journal:///tmp/x.log", None, None),
    ("postgresql://user@localhost/optuna", "psycopg2", "pip install 'lowrank[postgresql]'"),
    ("postgresql+pg8000://user@localhost/optuna", "pg8000", "pip install pg8000"),
    ("mysql+pymysql://user@localhost/optuna", "pymysql", "pip install pymysql"),
    ("mysql://user@localhost/optuna", "MySQLdb", "pip install mysqlclient"),
    ("cockroachdb://x", None, None),  # a dialect we do not know: optuna's own error speaks
])
def test_storage_urls_need_their_database_driver(url, refused_module, hint, monkeypatch):
    monkeypatch.setattr(extras, "installed", lambda module: False)
    if refused_module is None:
        extras.check_storage_url(url)
        return
    with pytest.raises(UserError) as refused:
        extras.check_storage_url(url)
    assert refused.value.key == "--storage" and refused_module in refused.value.detail and refused.value.hint == hint
    monkeypatch.setattr(extras, "installed", lambda module: True)
    extras.check_storage_url(url)
