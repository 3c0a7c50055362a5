"""A feature that needs an optional extra is refused before anything is created: one line naming
the key or flag, the missing package and the ``pip install 'lowrank[extra]'`` line, exit 2, and
nothing under LOWRANK_HOME -- from ``run``, ``run --detach``, ``compare`` (its preset and each
``--grid`` point), ``tune`` (its preset, its ``--space`` and ``--storage``), the console's launch
precheck, ``compare show --png``, ``export`` and ``bench model --mode onnx``.

Marked ``base_install``: ``.ci/run`` runs this file in a second virtual environment made with
``pip install -e .`` only, where the extras are really absent. Where an extra is installed (the
test environment), :func:`absent` hides it from :mod:`lowrank.extras` instead, so the same
refusals are checked on every run of the suite; the console's subprocess precheck, which a
monkeypatch cannot reach, is checked only where the extra is really missing.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from console.cli import main
from lowrank import extras

pytestmark = pytest.mark.base_install

REPO = Path(__file__).resolve().parents[2]
QUICK = str(REPO / "presets" / "quickstart.yaml")


def snapshot(home: Path) -> set[str]:
    return {str(path.relative_to(home)) for path in home.rglob("*")} if home.exists() else set()


@pytest.fixture
def absent(monkeypatch):
    """``absent(extra)``: make ``extra`` missing for this test (hidden if it is installed here)."""

    def hide(name: str) -> None:
        hidden = set(extras.EXTRAS[name].modules)
        really = extras.installed
        monkeypatch.setattr(extras, "installed", lambda module: module not in hidden and really(module))

    return hide


@pytest.fixture
def lowrank(tmp_path, monkeypatch, capsys):
    """The real entry point in-process; (exit code, stderr); asserts LOWRANK_HOME is unchanged."""
    home = tmp_path / "home"
    monkeypatch.setenv("LOWRANK_HOME", str(home))
    monkeypatch.chdir(tmp_path)

    def call(*args: str) -> tuple[int, str]:
        before = snapshot(home)
        monkeypatch.setattr(sys, "argv", ["lowrank", *args])
        with pytest.raises(SystemExit) as exit_info:
            main()
        out, err = capsys.readouterr()
        assert snapshot(home) == before, f"{args}: created {sorted(snapshot(home) - before)} under LOWRANK_HOME"
        assert "Traceback" not in out + err
        return exit_info.value.code, err

    call.home = home
    return call


def assert_refused(result: tuple[int, str], key: str, package: str, extra: str) -> None:
    code, err = result
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, (code, err)
    line = lines[0]
    assert line.startswith("error: ") and key in line.split("; hint: ")[0], line
    assert package in line and f"pip install 'lowrank[{extra}]'" in line, line


TENSORBOARD = ["--set", "log.tensorboard=true"]


@pytest.mark.parametrize("args", [
    ["run", QUICK, *TENSORBOARD],
    ["run", QUICK, *TENSORBOARD, "--detach"],
    ["run", QUICK, *TENSORBOARD, "--detach", "--cpu", "--json"],
    ["compare", QUICK, "--methods", "separable", "--budgets", "0.1", *TENSORBOARD, "--detach"],
    ["compare", QUICK, "--methods", "separable", "--budgets", "0.1", "--grid", "log.tensorboard=false,true"],
    ["tune", QUICK, "--space", "train.lr=log:0.01:0.1", "--trials", "1", *TENSORBOARD],
    ["tune", QUICK, "--space", "log.tensorboard=cat:false,true", "--trials", "1"],
], ids=["run", "run-detach", "run-detach-json", "compare", "compare-grid", "tune", "tune-space"])
def test_log_tensorboard_needs_the_tensorboard_extra(args, lowrank, absent):
    absent("tensorboard")
    assert_refused(lowrank(*args), "log.tensorboard", "tensorboard", "tensorboard")


def test_export_tensorboard_needs_the_tensorboard_extra(lowrank, absent):
    absent("tensorboard")
    assert_refused(lowrank("export", "tensorboard", "all"), "export tensorboard", "tensorboard", "tensorboard")


def test_the_console_launch_precheck_refuses_the_same(tmp_path, absent):
    """The launch dialog's check (console.precheck, in-process here; in a child below)."""
    from console.precheck import precheck_preset
    from lowrank.errors import UserError

    absent("tensorboard")
    with pytest.raises(UserError) as refused:
        precheck_preset(QUICK, ["log.tensorboard=true"], home=tmp_path / "home")
    assert refused.value.key == "log.tensorboard" and refused.value.hint == "pip install 'lowrank[tensorboard]'"
    assert not (tmp_path / "home").exists()


@pytest.mark.subprocess
@pytest.mark.skipif(extras.installed("tensorboard"), reason="the tensorboard extra is installed here: the child "
                                                            "process would find it (.ci/run's base venv runs this)")
def test_the_console_launch_precheck_child_refuses_on_a_base_install(tmp_path):
    from console.precheck import check_in_subprocess
    from lowrank.errors import UserError

    with pytest.raises(UserError) as refused:
        check_in_subprocess(QUICK, ["log.tensorboard=true"], home=tmp_path / "home")
    assert refused.value.key == "log.tensorboard" and "lowrank[tensorboard]" in refused.value.hint
    assert not (tmp_path / "home").exists()


def test_compare_show_png_needs_the_plot_extra(lowrank, absent):
    absent("plot")  # refused before the sweep is even looked up
    assert_refused(lowrank("compare", "show", "last", "--png", "plots.png"), "--png", "matplotlib", "plot")
    assert not Path("plots.png").exists()


def test_export_onnx_needs_the_export_extra(lowrank, absent):
    absent("export")
    assert_refused(lowrank("export", "some-run", "--format", "onnx"), "--format", "onnx", "export")


def test_bench_model_onnx_needs_the_export_extra(lowrank, absent):
    absent("export")
    assert_refused(lowrank("bench", "model", QUICK, "--mode", "eager,onnx"), "--mode onnx", "onnx", "export")


def test_a_postgresql_storage_needs_its_driver(lowrank, monkeypatch):
    really = extras.installed
    monkeypatch.setattr(extras, "installed", lambda module: module != "psycopg2" and really(module))
    assert_refused(lowrank("tune", QUICK, "--space", "train.lr=log:0.01:0.1", "--trials", "1", "--storage",
                           "postgresql://optuna@localhost/optuna"), "--storage", "psycopg2", "postgresql")
