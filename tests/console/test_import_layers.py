"""console/'s imports point one way: store -> (gpus, placement) -> backends -> scheduler -> the rest.

Read from the source (every import, also those inside functions), so a lazy import that
closes a circle is caught as well as a top-level one.
"""

from __future__ import annotations

import pytest

import ast
import subprocess
import sys
from pathlib import Path

CONSOLE = Path(__file__).resolve().parents[2] / "console"

# lower number = lower layer; a module may import only its own layer or lower ones
LAYERS = {
    "console.runs": 0, "console.safe_text": 0, "console.ranks_text": 0, "console.run_ids": 0,
    "console.gpus": 1,
    "console.placement": 2,
    "console.backends": 3, "console.backends.base": 3, "console.backends.local": 4, "console.backends.slurm": 4,
    "console.backends.nodes": 4,  # node 0 and the joining nodes of a run started by hand: beside local
    "console.scheduler": 5, "console.launch": 5,  # launch: the old import path (a re-export)
}


def _module(path: Path) -> str:
    parts = path.relative_to(CONSOLE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)  # from console import gpus
    return {name for name in found if name.startswith("console.") or name == "console"}


def _layer(name: str) -> int | None:
    while name:
        if name in LAYERS:
            return LAYERS[name]
        name = name.rpartition(".")[0]
    return None


def test_no_module_imports_a_higher_layer():
    bad = []
    for path in sorted(CONSOLE.rglob("*.py")):
        module = _module(path)
        own = _layer(module)
        if own is None:
            continue  # commands, tui, compare ...: the top, may import anything below
        for target in _imports(path):
            theirs = _layer(target)
            if theirs is not None and theirs > own and not target.startswith(module + "."):
                bad.append(f"{module} (layer {own}) imports {target} (layer {theirs})")
    assert not bad, "\n".join(bad)


@pytest.mark.subprocess
def test_the_store_loads_no_other_console_module():
    code = ("import sys, console.runs; "
            "print(sorted(m for m in sys.modules if m.startswith('console') and m not in ('console', 'console.runs')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
