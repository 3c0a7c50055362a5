"""The torch-free catalogue of registry declarations, and the commands that must answer without torch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lowrank import catalogue as cat

REPO = Path(__file__).resolve().parents[2]


def test_cached_catalogue_is_the_live_registries(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    live = cat.live()
    path = tmp_path / "lowrank" / f"catalogue-{cat.cache_key()}.json"
    monkeypatch.setattr(cat, "REGISTRY_MODULES", ("lowrank.no_such_module",))  # force the cache path
    assert cat.catalogue().to_json() == json.loads(json.dumps(live.to_json()))  # built and written
    assert path.exists()
    path.write_text(path.read_text().replace('"acdc"', '"acdc_from_cache"', 1))
    assert "acdc_from_cache" in cat.catalogue().methods  # the second call reads the file
    path.write_text("{ torn")
    assert "acdc" in cat.catalogue().methods  # a torn cache is rebuilt
    assert {"tiny_convnet", "wrn", "resnet9"} <= set(live.models) and "synthetic" in live.datasets
    assert live.models["mlp"]["hidden"] == "POSITIONAL_OR_KEYWORD"
    with pytest.raises(KeyError, match="known methods: acdc"):
        live.method("nope")
    hp = live.method("acdc").hp
    assert hp.validate(3) == 3 and isinstance(hp.validate(3.0), int)
    with pytest.raises(ValueError, match="outside"):
        hp.validate(10_000)


def test_cache_key_follows_every_package_file(tmp_path, monkeypatch):
    (tmp_path / "methods").mkdir()
    (tmp_path / "a.py").write_text("x = 1\n")
    (tmp_path / "methods" / "b.py").write_text("y = 1\n")
    monkeypatch.setattr(cat, "PACKAGE", tmp_path)
    first = cat.cache_key()
    assert cat.cache_key() == first
    (tmp_path / "methods" / "new_method.py").write_text("z = 1\n")  # a method added by a new file
    second = cat.cache_key()
    assert second != first
    os.utime(tmp_path / "a.py", ns=(1, 1))  # an edit (mtime)
    assert cat.cache_key() != second


def test_unwritable_cache_falls_back_to_the_registries(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))  # a file: the cache dir cannot be made
    monkeypatch.setattr(cat, "REGISTRY_MODULES", ("lowrank.no_such_module",))
    assert "hashed" in cat.catalogue().methods


@pytest.fixture(scope="module")
def warm_cache(tmp_path_factory) -> Path:
    """An XDG cache that the first ``lowrank methods`` after an install has filled (torch imported once)."""
    cache = tmp_path_factory.mktemp("cache")
    env = {**os.environ, "XDG_CACHE_HOME": str(cache), "LOWRANK_HOME": str(tmp_path_factory.mktemp("home")),
           "PYTHONPATH": str(REPO)}
    warm = subprocess.run([sys.executable, "-m", "console.cli", "methods"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert warm.returncode == 0, warm.stderr  # the first call after an install builds the cache
    return cache


PROBE = """
import sys
from console.cli import main
sys.argv = ["lowrank", *sys.argv[1:]]
try:
    main()
except SystemExit:
    pass
finally:
    print("TORCH" if "torch" in sys.modules else "NO-TORCH", file=sys.stderr)
"""


@pytest.mark.parametrize("argv", [
    ["methods"], ["methods", "--json"], ["ls"], ["ls", "--json"], ["logs", "nosuch"], ["kill", "nosuch"],
    ["run", "presets/quickstart.yaml", "--set", "train.epochz=3"],
    ["run", "presets/quickstart.yaml", "--set", "substitute.method=nosuch"],
    ["run", "presets/quickstart.yaml", "--set", "model.kwargs.widthh=2"],
])
@pytest.mark.subprocess
def test_fast_commands_do_not_import_torch(argv, tmp_path, warm_cache):
    env = {**os.environ, "XDG_CACHE_HOME": str(warm_cache), "LOWRANK_HOME": str(tmp_path / "home"),
           "PYTHONPATH": str(REPO)}
    probe = subprocess.run([sys.executable, "-c", PROBE, *argv], cwd=REPO, env=env, capture_output=True,
                           text=True, timeout=300)
    assert probe.stderr.strip().endswith("NO-TORCH"), probe.stderr
    if argv[0] == "run":
        assert "error:" in probe.stderr and "Traceback" not in probe.stderr
        assert not (tmp_path / "home" / "runs").exists() or not any((tmp_path / "home" / "runs").iterdir())
