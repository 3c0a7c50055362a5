"""How fast the commands answer: wall time of fresh ``lowrank`` processes against ``lowrank --help``.

    python benchmarks/startup.py                  # 5 interleaved rounds
    python benchmarks/startup.py --rounds 9 --json

Each round runs every command once as a new process (``python -m console.cli ...``, the entry
point's code) in a shuffled order against one scratch ``LOWRANK_HOME`` holding a finished run,
so background load hits all commands alike; the report is each command's median and min/max
seconds and its ratio to ``--help`` measured in the same rounds. Targets (issue 12): ``methods``,
``ls``, ``logs``, ``kill`` and a config error under 0.7 s (none of them imports torch);
``count`` of WRN-28-10 under 3 s.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# name -> (argv after `lowrank`, target seconds or None)
COMMANDS: dict[str, tuple[list[str], float | None]] = {
    "--help": (["--help"], None),
    "methods": (["methods"], 0.7),
    "ls": (["ls"], 0.7),
    "logs": (["logs", "last"], 0.7),
    "kill": (["kill", "nosuch"], 0.7),  # answers 'no such run' (a finished run would be a no-op too)
    "config error": (["run", str(REPO / "presets" / "quickstart.yaml"), "--set", "train.epochz=3"], 0.7),
    "count wrn28_10": (["count", str(REPO / "presets" / "wrn28_10_teacher.yaml")], 3.0),
}


def _run(argv: list[str], env: dict) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "console.cli", *argv], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, timeout=600)
    return time.perf_counter() - start


def measure(rounds: int, home: Path) -> dict:
    """Median/min/max seconds per command over ``rounds`` shuffled rounds, and the ratio to --help."""
    env = {**os.environ, "LOWRANK_HOME": str(home), "PYTHONPATH": str(REPO)}
    # one finished run for ls/logs, made by the real worker; and the catalogue cache warmed, as after
    # the first command following an install
    subprocess.run([sys.executable, "-m", "console.cli", "run", str(REPO / "presets" / "quickstart.yaml"),
                    "--set", "train.epochs=1"], cwd=REPO, env=env, capture_output=True, timeout=600, check=True)
    for argv, _ in COMMANDS.values():
        _run(argv, env)
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    order = list(COMMANDS)
    for _ in range(rounds):
        random.shuffle(order)
        for name in order:
            times[name].append(_run(COMMANDS[name][0], env))
    base = statistics.median(times["--help"])
    rows = []
    for name, (argv, target) in COMMANDS.items():
        median = statistics.median(times[name])
        rows.append({"command": name, "argv": argv, "median_s": median, "min_s": min(times[name]),
                     "max_s": max(times[name]), "ratio_to_help": median / base, "target_s": target,
                     "meets_target": None if target is None else median < target})
    return {"rounds": rounds, "rows": rows}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="lowrank-startup-") as tmp:
        result = measure(args.rounds, Path(tmp))
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"{'command':<16} {'median s':>9} {'min':>7} {'max':>7} {'x --help':>9}  target")
    for row in result["rows"]:
        target = "" if row["target_s"] is None else f"< {row['target_s']} s: {'met' if row['meets_target'] else 'MISSED'}"
        print(f"{row['command']:<16} {row['median_s']:>9.3f} {row['min_s']:>7.3f} {row['max_s']:>7.3f} "
              f"{row['ratio_to_help']:>9.2f}  {target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
