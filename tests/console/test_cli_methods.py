"""``lowrank methods`` and ``lowrank bench layers`` through the real Typer app."""

from __future__ import annotations

import pytest

import json

from typer.testing import CliRunner

from console.cli import app

runner = CliRunner()


def test_methods_json_lists_declarations():
    result = runner.invoke(app, ["methods", "--json"])
    assert result.exit_code == 0, result.output
    rows = {row["name"]: row for row in json.loads(result.output)}
    assert {"dense", "separable", "generic", "acdc", "hashed", "sep_hashed", "shuffle"} <= set(rows)
    assert rows["dense"]["hp"] is None
    assert rows["acdc"]["hp"]["name"] == "layers" and rows["acdc"]["hp"]["kind"] == "int"
    assert rows["acdc"]["options"] == {"shuffle": "riffle", "extra_riffle": False, "path": "auto", "seed": 0}
    assert rows["shuffle"]["hp"]["direction"] == -1
    assert rows["hashed"]["hp"]["low"] > 0 and rows["hashed"]["hp"]["high"] == 1.0


def test_methods_text_has_one_block_per_method():
    result = runner.invoke(app, ["methods"])
    assert result.exit_code == 0, result.output
    assert "sep_hashed" in result.output and "layers:int [1, 64]" in result.output
    assert "up = fewer params" in result.output  # shuffle's groups


@pytest.mark.slow
def test_bench_layers_json_tiny():
    result = runner.invoke(app, ["bench", "layers", "--json", "--channels", "8", "--batch", "2", "--hw", "4",
                                 "--repeat", "1", "--methods", "generic,acdc", "--linear-n", "16",
                                 "--linear-batch", "2"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    conv = [r for r in rows if r["kind"] == "conv"]
    assert [r["method"] for r in conv] == ["dense", "generic", "acdc"]
    assert [r["method"] for r in rows if r["kind"] == "linear"][0] == "linear"


def test_bench_layers_table_tiny():
    result = runner.invoke(app, ["bench", "layers", "--channels", "8", "--batch", "1", "--hw", "4", "--repeat", "1",
                                 "--methods", "separable", "--linear-n", "0"])
    assert result.exit_code == 0, result.output
    assert "x dense" in result.output and "separable" in result.output


def test_bench_rejects_bad_lists_and_unknown_methods(lowrank):
    code, _, err = lowrank("bench", "layers", "--channels", "8,x")
    assert code == 2 and "--channels" in err and err.count("\n") == 1
    code, _, err = lowrank("bench", "layers", "--methods", "nope", "--linear-n", "0")
    assert code == 2 and "unknown substitute method" in err and err.count("\n") == 1
    code, _, err = lowrank("bench", "layers", "--device", "tpu")
    assert code == 2 and "--device" in err and err.count("\n") == 1
